//! Executors that speak HTTP: `http.request`, `http.check`, `http.wait`,
//! `http.suite`, `http.monitor`, `prom.query` and `notify.slack` /
//! `notify.discord` / `notify.webhook`, on reqwest with rustls. Each attempt
//! sends its requests once; a failure carries a [`crate::retry::Class`] so
//! that the scheduler retries what is worth retrying. See docs/http.md.

mod client;
mod expect;
mod monitor;
mod notify;
mod prom;
mod request;
mod step;
mod suite;

use std::future::Future;
use std::sync::Arc;

use crate::executor::{BoxFuture, Executor, Io, Job, Registry};
use notify::Service;
use step::{Ctx, Failure, Outputs};

/// An executor made of an async function of the attempt's inputs.
struct Action<F>(F);

impl<F, Fut> Executor for Action<F>
where
    F: Fn(Ctx) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Result<Outputs, Failure>> + Send + 'static,
{
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(step::drive(job, io, self.0))
    }
}

/// Adds the HTTP executors to `r`.
pub fn register(r: &mut Registry) {
    r.register("http.request", Arc::new(Action(request::request)));
    r.register("http.check", Arc::new(Action(request::check)));
    r.register("http.wait", Arc::new(Action(request::wait)));
    r.register("http.suite", Arc::new(Action(suite::suite)));
    r.register("http.monitor", Arc::new(Action(monitor::monitor)));
    r.register("prom.query", Arc::new(Action(prom::query)));
    r.register(
        "notify.slack",
        Arc::new(Action(|c| notify::notify(c, Service::Slack))),
    );
    r.register(
        "notify.discord",
        Arc::new(Action(|c| notify::notify(c, Service::Discord))),
    );
    r.register(
        "notify.webhook",
        Arc::new(Action(|c| notify::notify(c, Service::Webhook))),
    );
}
