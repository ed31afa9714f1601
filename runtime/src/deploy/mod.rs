//! Deployments: the `deploy.container` and `deploy.rollback` executors. A
//! deployment runs a service's image as a long-lived container on a
//! user-defined network, by one of two strategies — `recreate` (stop the old
//! container, start the new one) or `blue-green` (start the new colour beside
//! the old, wait healthy, switch the [`proxy`], drain, stop the old) — and
//! records it in the [`ledger`]. Rollback redeploys an earlier ledger row by
//! its image digest, after the database down-step when the migration version
//! differs. Everything goes through the Engine API. See docs/deploy.md and
//! docs/ROLLBACK.md.

pub mod engine;
pub mod ledger;
pub mod proxy;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::executor::{BoxFuture, Executor, Io, Job, Registry};

/// Label: the service a deployment container belongs to.
pub const LABEL_SERVICE: &str = "dev.pipe.deploy.service";
/// Label: the environment it is deployed to.
pub const LABEL_ENV: &str = "dev.pipe.deploy.env";
/// Label: the version it runs.
pub const LABEL_VERSION: &str = "dev.pipe.deploy.version";
/// Label: `blue`, `green`, or `none` (recreate).
pub const LABEL_COLOUR: &str = "dev.pipe.deploy.colour";
/// Label: `app` or `proxy`.
pub const LABEL_ROLE: &str = "dev.pipe.deploy.role";
/// Label: `recreate` or `blue-green`.
pub const LABEL_STRATEGY: &str = "dev.pipe.deploy.strategy";
/// Label: the ledger row of the deployment.
pub const LABEL_LEDGER: &str = "dev.pipe.deploy.ledger";
/// The `dev.pipe.kind` of deployment containers: they outlive their run.
pub const KIND: &str = "deploy";

/// How to deploy a service: everything but the secret values, so that a
/// rollback can deploy the same way again (stored in the ledger).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Spec {
    pub image: String,
    pub service: String,
    pub environment: String,
    pub strategy: String,
    pub network: String,
    /// Host port of the stable endpoint (`None`: a free one).
    pub port: Option<u16>,
    pub container_port: u16,
    /// HTTP path probed for health when the image has no HEALTHCHECK.
    pub health: Option<String>,
    /// Environment variables that are not secrets.
    pub vars: Vec<(String, String)>,
    /// Names of the secret variables: their values are never stored.
    pub secret_keys: Vec<String>,
    pub ready_within_ms: u64,
    pub drain_ms: u64,
    /// Binds `HOST:CONTAINER[:ro]` (a relative host path is made absolute
    /// against the project root) or named volumes `NAME:CONTAINER`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// The database down-step command, for rollbacks.
    pub migrate_down: Option<String>,
    /// `repo@sha256:...` when the image came from a registry.
    pub repo_digest: Option<String>,
    /// The `pipe` process deploying (`host:pid:start`), to tell a crashed
    /// deployment from a running one.
    pub owner: String,
}

/// Adds `deploy.container` and `deploy.rollback` to the registry.
pub fn register(r: &mut Registry) {
    r.register("deploy.container", Arc::new(Container));
    r.register("deploy.rollback", Arc::new(Rollback));
}

/// Deploys a container.
pub struct Container;

impl Executor for Container {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(engine::deploy_step(job, io))
    }
}

/// Redeploys an earlier version from the ledger.
pub struct Rollback;

impl Executor for Rollback {
    fn run(&self, job: Job, io: Io) -> BoxFuture {
        Box::pin(engine::rollback_step(job, io))
    }
}

/// Whether `pipe gc` must keep a deployment container whose `pipe` is gone:
/// a proxy always; a blue-green colour while its proxy sends traffic to it;
/// a recreated container while it runs. Anything else is the leftover of an
/// interrupted deployment.
pub async fn keep_in_gc<S: std::hash::BuildHasher>(
    docker: &bollard::Docker,
    labels: &HashMap<String, String, S>,
    id: &str,
    running: bool,
) -> bool {
    match labels.get(LABEL_ROLE).map(String::as_str) {
        Some("proxy") => true,
        _ if labels.get(LABEL_STRATEGY).map(String::as_str) == Some("recreate") => running,
        _ => {
            let (Some(svc), Some(env)) = (labels.get(LABEL_SERVICE), labels.get(LABEL_ENV)) else {
                return false;
            };
            match engine::active_container(docker, env, svc).await {
                Ok(Some(active)) => active == id,
                Ok(None) => false,
                // When the Engine cannot tell, keep it: removing live traffic is worse.
                Err(_) => true,
            }
        }
    }
}
