//! Integration tests: every file here drives the real `pipe` binary. They all
//! compile into one test binary (`autotests = false` in Cargo.toml).

mod common;

mod audit_service;
mod chaos;
mod check;
mod deploy;
mod docker;
mod docs;
mod env;
mod examples;
mod export;
mod fmt;
mod gates;
mod graph;
mod http;
mod list;
mod live;
mod lsp;
mod release;
mod report;
mod run;
mod swarm;
