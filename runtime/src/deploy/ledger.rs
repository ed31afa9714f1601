//! The deployment ledger: one row per deployment of a service to an
//! environment, in the `deployments` table of the state store. A row is
//! written `deploying` before anything changes in the Engine, then becomes
//! `active` at the traffic switch (the row it replaces becomes `superseded`,
//! or `rolled_back` when the new row is a rollback), or `failed`. Rollback
//! reads its target, image digest and spec from here. See docs/deploy.md.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::state::{now_ms, StateError, Store};

/// A row of the ledger.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: i64,
    pub environment: String,
    pub service: String,
    pub version: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub migration_version: Option<String>,
    pub run_id: Option<i64>,
    pub step_id: Option<String>,
    pub container_id: Option<String>,
    pub strategy: String,
    /// How to deploy it again (see [`super::Spec`]), secrets left out.
    pub spec: serde_json::Value,
    pub approved_by: Option<String>,
    pub status: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub note: Option<String>,
}

/// What is known when a deployment starts.
#[derive(Clone, Debug, Default)]
pub struct NewEntry {
    pub environment: String,
    pub service: String,
    pub version: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub migration_version: Option<String>,
    pub run_id: Option<i64>,
    pub step_id: Option<String>,
    pub strategy: String,
    pub spec: serde_json::Value,
    pub approved_by: Option<String>,
    pub note: Option<String>,
}

const COLS: &str = "id, environment, service, version, image, image_digest, migration_version, run_id, step_id, container_id, strategy, spec, approved_by, status, created_ms, finished_ms, note";

fn err(store: &Store, e: &rusqlite::Error) -> StateError {
    StateError::Sqlite {
        path: store.dir().join("state.db"),
        detail: e.to_string(),
    }
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let spec: String = r.get(11)?;
    Ok(Entry {
        id: r.get(0)?,
        environment: r.get(1)?,
        service: r.get(2)?,
        version: r.get(3)?,
        image: r.get(4)?,
        image_digest: r.get(5)?,
        migration_version: r.get(6)?,
        run_id: r.get(7)?,
        step_id: r.get(8)?,
        container_id: r.get(9)?,
        strategy: r.get(10)?,
        spec: serde_json::from_str(&spec).unwrap_or_default(),
        approved_by: r.get(12)?,
        status: r.get(13)?,
        created_ms: r.get(14)?,
        finished_ms: r.get(15)?,
        note: r.get(16)?,
    })
}

/// Records a deployment that is starting (`deploying`); returns its id.
pub fn insert(store: &Store, e: &NewEntry) -> Result<i64, StateError> {
    let c = store.conn();
    c.execute(
        "INSERT INTO deployments (environment, service, version, image, image_digest, migration_version, run_id, step_id, strategy, spec, approved_by, status, created_ms, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'deploying', ?12, ?13)",
        params![
            e.environment,
            e.service,
            e.version,
            e.image,
            e.image_digest,
            e.migration_version,
            e.run_id,
            e.step_id,
            e.strategy,
            e.spec.to_string(),
            e.approved_by,
            now_ms(),
            e.note
        ],
    )
    .map_err(|x| err(store, &x))?;
    Ok(c.last_insert_rowid())
}

/// Notes the container a deployment created (before it takes traffic).
pub fn set_container(store: &Store, id: i64, container: &str) -> Result<(), StateError> {
    store
        .conn()
        .execute(
            "UPDATE deployments SET container_id = ?2 WHERE id = ?1",
            params![id, container],
        )
        .map_err(|x| err(store, &x))?;
    Ok(())
}

/// Ends a deployment that did not take traffic.
pub fn fail(store: &Store, id: i64, why: &str) -> Result<(), StateError> {
    store
        .conn()
        .execute(
            "UPDATE deployments SET status = 'failed', finished_ms = ?2, note = ?3 WHERE id = ?1",
            params![id, now_ms(), why],
        )
        .map_err(|x| err(store, &x))?;
    Ok(())
}

/// Makes `id` the active deployment of its service in its environment; the
/// row that was active becomes `replaced_as` (`superseded` or `rolled_back`).
pub fn activate(store: &Store, id: i64, replaced_as: &str) -> Result<(), StateError> {
    let c = store.conn();
    let tx = c.unchecked_transaction().map_err(|x| err(store, &x))?;
    tx.execute(
        "UPDATE deployments SET status = ?2 WHERE status = 'active' AND id != ?1
           AND (environment, service) = (SELECT environment, service FROM deployments WHERE id = ?1)",
        params![id, replaced_as],
    )
    .map_err(|x| err(store, &x))?;
    tx.execute(
        "UPDATE deployments SET status = 'active', finished_ms = ?2 WHERE id = ?1",
        params![id, now_ms()],
    )
    .map_err(|x| err(store, &x))?;
    tx.commit().map_err(|x| err(store, &x))
}

/// Rows, newest first, optionally of one environment and/or service.
pub fn list(
    store: &Store,
    environment: Option<&str>,
    service: Option<&str>,
) -> Result<Vec<Entry>, StateError> {
    let mut st = store
        .conn()
        .prepare(&format!(
            "SELECT {COLS} FROM deployments
             WHERE (?1 IS NULL OR environment = ?1) AND (?2 IS NULL OR service = ?2)
             ORDER BY id DESC"
        ))
        .map_err(|x| err(store, &x))?;
    let rows = st
        .query_map(params![environment, service], from_row)
        .map_err(|x| err(store, &x))?;
    rows.collect::<Result<_, _>>().map_err(|x| err(store, &x))
}

pub fn get(store: &Store, id: i64) -> Result<Option<Entry>, StateError> {
    store
        .conn()
        .query_row(
            &format!("SELECT {COLS} FROM deployments WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()
        .map_err(|x| err(store, &x))
}

/// The active row of a service in an environment.
pub fn active(
    store: &Store,
    environment: &str,
    service: &str,
) -> Result<Option<Entry>, StateError> {
    store
        .conn()
        .query_row(
            &format!(
                "SELECT {COLS} FROM deployments WHERE environment = ?1 AND service = ?2 AND status = 'active' ORDER BY id DESC LIMIT 1"
            ),
            params![environment, service],
            from_row,
        )
        .optional()
        .map_err(|x| err(store, &x))
}

/// Services with an active deployment in an environment.
pub fn services(store: &Store, environment: &str) -> Result<Vec<String>, StateError> {
    let mut st = store
        .conn()
        .prepare("SELECT DISTINCT service FROM deployments WHERE environment = ?1 AND status = 'active' ORDER BY service")
        .map_err(|x| err(store, &x))?;
    let rows = st
        .query_map([environment], |r| r.get(0))
        .map_err(|x| err(store, &x))?;
    rows.collect::<Result<_, _>>().map_err(|x| err(store, &x))
}

/// Services of an environment that run `run_id` deployed to (a row of the
/// run, whatever became of it), in name order.
pub fn touched_by_run(
    store: &Store,
    environment: &str,
    run_id: i64,
) -> Result<Vec<String>, StateError> {
    let mut st = store
        .conn()
        .prepare("SELECT DISTINCT service FROM deployments WHERE environment = ?1 AND run_id = ?2 ORDER BY service")
        .map_err(|x| err(store, &x))?;
    let rows = st
        .query_map(params![environment, run_id], |r| r.get(0))
        .map_err(|x| err(store, &x))?;
    rows.collect::<Result<_, _>>().map_err(|x| err(store, &x))
}

/// What a rollback of `service` goes back to: the newest earlier deployment
/// that took traffic and was later superseded, of another version than the
/// active one — or the newest one of version `to`.
pub fn rollback_target(
    store: &Store,
    environment: &str,
    service: &str,
    to: Option<&str>,
) -> Result<Option<Entry>, StateError> {
    let current = active(store, environment, service)?;
    let rows = list(store, Some(environment), Some(service))?;
    Ok(rows.into_iter().find(|e| {
        let took_traffic = matches!(e.status.as_str(), "superseded" | "rolled_back" | "active");
        match to {
            Some(v) => took_traffic && e.version == v,
            None => {
                e.status == "superseded"
                    && current
                        .as_ref()
                        .is_none_or(|c| e.id < c.id && e.version != c.version)
            }
        }
    }))
}

/// Rows still `deploying` (their pipe may have died), of one service.
pub fn in_flight(
    store: &Store,
    environment: &str,
    service: &str,
) -> Result<Vec<Entry>, StateError> {
    Ok(list(store, Some(environment), Some(service))?
        .into_iter()
        .filter(|e| e.status == "deploying")
        .collect())
}

/// Who approved a run: the people whose approvals its gates recorded (see
/// [`crate::gate`]), each once, in order; `None` when no gate was approved.
pub fn approver(store: &Store, run_id: i64) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for g in crate::gate::gates_of_run(store, run_id).ok()? {
        for u in g.approved_by() {
            if !names.contains(&u) {
                names.push(u);
            }
        }
    }
    (!names.is_empty()).then(|| names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str) -> NewEntry {
        NewEntry {
            environment: "prod".into(),
            service: "api".into(),
            version: version.into(),
            image: format!("app:{version}"),
            strategy: "blue-green".into(),
            spec: serde_json::json!({}),
            ..NewEntry::default()
        }
    }

    #[test]
    fn activation_supersedes_and_rollback_finds_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = insert(&store, &entry("1")).unwrap();
        activate(&store, a, "superseded").unwrap();
        let b = insert(&store, &entry("2")).unwrap();
        activate(&store, b, "superseded").unwrap();
        let c = insert(&store, &entry("3")).unwrap();
        fail(&store, c, "health check never passed").unwrap();
        assert_eq!(active(&store, "prod", "api").unwrap().unwrap().version, "2");
        assert_eq!(get(&store, a).unwrap().unwrap().status, "superseded");
        assert_eq!(get(&store, c).unwrap().unwrap().status, "failed");
        let t = rollback_target(&store, "prod", "api", None)
            .unwrap()
            .unwrap();
        assert_eq!(t.id, a);
        // The rollback itself: a new row for version 1 replaces 2 as rolled back.
        let r = insert(&store, &entry("1")).unwrap();
        activate(&store, r, "rolled_back").unwrap();
        assert_eq!(get(&store, b).unwrap().unwrap().status, "rolled_back");
        assert!(rollback_target(&store, "prod", "api", None)
            .unwrap()
            .is_none());
        assert_eq!(
            rollback_target(&store, "prod", "api", Some("2"))
                .unwrap()
                .unwrap()
                .id,
            b
        );
        assert!(rollback_target(&store, "prod", "api", Some("3"))
            .unwrap()
            .is_none());
        assert_eq!(services(&store, "prod").unwrap(), ["api"]);
        assert!(touched_by_run(&store, "prod", 1).unwrap().is_empty());
        assert_eq!(list(&store, Some("prod"), None).unwrap().len(), 4);
        assert!(list(&store, Some("staging"), None).unwrap().is_empty());
    }

    #[test]
    fn approver_is_null_without_an_approval_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(approver(&store, 1), None);
    }
}
