//! Integration tests of `pipe-lang`, one module per area, compiled into one
//! test binary (see `autotests = false` in Cargo.toml) so the suite links once.

mod common;

mod analysis;
mod asserts;
mod critical;
mod limits;
mod parser;
mod properties;
mod snapshots;
