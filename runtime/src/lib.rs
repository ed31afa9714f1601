//! `pipe-runtime`: runs a frozen [`pipe_lang::plan::Plan`]. The [`scheduler`]
//! dispatches steps to [`executor`]s, records every change in the [`state`]
//! store before emitting an [`event`] about it. See docs/runtime.md.

pub mod cache;
pub mod chaos;
pub mod deploy;
pub mod docker;
pub mod environment;
pub mod event;
pub mod executor;
pub mod gate;
pub mod history;
pub mod http;
pub mod mask;
pub mod process_tree;
pub mod retry;
pub mod run_context;
pub mod scheduler;
pub mod scope;
pub mod secrets;
pub mod state;
pub mod time;

pub use event::{Event, Sink};
pub use scheduler::{Options, RunEnd, Scheduler};
pub use state::{StateError, Store};
