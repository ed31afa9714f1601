//! The SQLite database: opening it from `DATABASE_URL`, the versioned
//! migrations (`migrations/NNN_name.up.sql` / `.down.sql`, embedded in the
//! binary or read from a directory), backups and their restore.
//!
//! Every migration runs in its own transaction together with the row that
//! records it in `schema_migrations`, so a failing one leaves the schema at the
//! previous version; the callers also take a file backup first and restore it
//! on failure, which undoes what a transaction cannot (a half-written file).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

/// One migration: its version, name and the SQL of both directions.
#[derive(Clone, Debug)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub up: String,
    pub down: String,
}

/// The migrations shipped in `migrations/`, embedded at compile time.
const EMBEDDED: &[(&str, &str, &str)] = &[
    (
        "001_create_audits",
        include_str!("../migrations/001_create_audits.up.sql"),
        include_str!("../migrations/001_create_audits.down.sql"),
    ),
    (
        "002_audit_results",
        include_str!("../migrations/002_audit_results.up.sql"),
        include_str!("../migrations/002_audit_results.down.sql"),
    ),
    (
        "003_audit_attempts",
        include_str!("../migrations/003_audit_attempts.up.sql"),
        include_str!("../migrations/003_audit_attempts.down.sql"),
    ),
];

/// The migrations compiled into this binary, in order.
pub fn embedded() -> Vec<Migration> {
    EMBEDDED
        .iter()
        .map(|(file, up, down)| {
            let (version, name) = split_name(file).expect("embedded migration names are valid");
            Migration {
                version,
                name,
                up: (*up).to_string(),
                down: (*down).to_string(),
            }
        })
        .collect()
}

/// `001_create_audits` → (1, "create_audits").
fn split_name(stem: &str) -> Option<(u32, String)> {
    let (num, name) = stem.split_once('_')?;
    if num.len() != 3 || name.is_empty() {
        return None;
    }
    Some((num.parse().ok()?, name.to_string()))
}

/// Reads `NNN_name.up.sql` / `NNN_name.down.sql` pairs from `dir`. Every `up`
/// needs its `down`, versions must be unique and start at 1 without gaps.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out: Vec<Migration> = Vec::new();
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
        })
        .collect();
    names.sort();
    for n in &names {
        let Some(stem) = n.strip_suffix(".up.sql") else {
            if n.ends_with(".down.sql") {
                continue;
            }
            return Err(format!(
                "{}: migration files are named NNN_name.up.sql and NNN_name.down.sql",
                dir.join(n).display()
            ));
        };
        let Some((version, name)) = split_name(stem) else {
            return Err(format!(
                "{}: expected a name like 001_create_table.up.sql",
                dir.join(n).display()
            ));
        };
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map_err(|e| format!("cannot read {}: {e}", dir.join(f).display()))
        };
        let up = read(n)?;
        let down = read(&format!("{stem}.down.sql"))?;
        if out.iter().any(|m| m.version == version) {
            return Err(format!("two migrations have version {version:03}"));
        }
        out.push(Migration {
            version,
            name,
            up,
            down,
        });
    }
    for n in &names {
        if let Some(stem) = n.strip_suffix(".down.sql") {
            if !names.contains(&format!("{stem}.up.sql")) {
                return Err(format!(
                    "{}: has no matching .up.sql",
                    dir.join(n).display()
                ));
            }
        }
    }
    for (i, m) in out.iter().enumerate() {
        if m.version as usize != i + 1 {
            return Err(format!(
                "migration versions must count up from 001 without gaps: found {:03}_{} where {:03} was expected",
                m.version,
                m.name,
                i + 1
            ));
        }
    }
    Ok(out)
}

/// The file named by a `DATABASE_URL`: `sqlite:///abs/path.db`,
/// `sqlite://rel/path.db`, `sqlite:path.db` or a bare path.
pub fn path_from_url(url: &str) -> Result<PathBuf, String> {
    let rest = if let Some(r) = url.strip_prefix("sqlite://") {
        r
    } else if let Some(r) = url.strip_prefix("sqlite:") {
        r
    } else if url.contains("://") {
        return Err(format!(
            "DATABASE_URL `{url}` is not a SQLite URL: this service stores its data in SQLite (sqlite:///path/to/audit.db)"
        ));
    } else {
        url
    };
    let rest = rest.split('?').next().unwrap_or_default();
    if rest.is_empty() {
        return Err("DATABASE_URL names no file (expected sqlite:///path/to/audit.db)".into());
    }
    Ok(PathBuf::from(rest))
}

/// Opens (creating) the database with the settings every connection uses.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn ensure_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
        )",
    )
}

/// The highest applied migration, 0 for a new database.
pub fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    ensure_table(conn)?;
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
}

/// Each migration with the time it was applied, if it was.
pub fn status(
    conn: &Connection,
    migrations: &[Migration],
) -> rusqlite::Result<Vec<(Migration, Option<String>)>> {
    ensure_table(conn)?;
    let mut out = Vec::new();
    for m in migrations {
        let at: Option<String> = conn
            .query_row(
                "SELECT applied_at FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()?;
        out.push((m.clone(), at));
    }
    Ok(out)
}

/// A migration that failed: which one, in which direction, and why.
#[derive(Debug)]
pub struct MigrateError {
    pub version: u32,
    pub name: String,
    pub direction: &'static str,
    pub message: String,
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migration {:03}_{} ({}) failed: {}",
            self.version, self.name, self.direction, self.message
        )
    }
}

/// Applies (`target` above the current version) or reverts (below) migrations
/// one transaction each until the schema is at `target`. Returns the steps
/// taken as `"up 002_audit_results"` lines.
pub fn migrate_to(
    conn: &mut Connection,
    migrations: &[Migration],
    target: u32,
) -> Result<Vec<String>, MigrateError> {
    let fail = |m: &Migration, direction, e: &dyn fmt::Display| MigrateError {
        version: m.version,
        name: m.name.clone(),
        direction,
        message: e.to_string(),
    };
    let bookkeeping = |e: rusqlite::Error| MigrateError {
        version: 0,
        name: "schema_migrations".into(),
        direction: "read",
        message: e.to_string(),
    };
    let current = current_version(conn).map_err(bookkeeping)?;
    let latest = migrations.last().map_or(0, |m| m.version);
    if target > latest {
        return Err(MigrateError {
            version: target,
            name: "?".into(),
            direction: "up",
            message: format!("there is no migration {target:03}: the latest is {latest:03}"),
        });
    }
    let mut done = Vec::new();
    if target > current {
        for m in migrations
            .iter()
            .filter(|m| m.version > current && m.version <= target)
        {
            let tx = conn.transaction().map_err(|e| fail(m, "up", &e))?;
            tx.execute_batch(&m.up).map_err(|e| fail(m, "up", &e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                params![m.version, m.name],
            )
            .map_err(|e| fail(m, "up", &e))?;
            tx.commit().map_err(|e| fail(m, "up", &e))?;
            done.push(format!("up {:03}_{}", m.version, m.name));
        }
    } else {
        for m in migrations
            .iter()
            .rev()
            .filter(|m| m.version <= current && m.version > target)
        {
            let tx = conn.transaction().map_err(|e| fail(m, "down", &e))?;
            tx.execute_batch(&m.down).map_err(|e| fail(m, "down", &e))?;
            tx.execute(
                "DELETE FROM schema_migrations WHERE version = ?1",
                [m.version],
            )
            .map_err(|e| fail(m, "down", &e))?;
            tx.commit().map_err(|e| fail(m, "down", &e))?;
            done.push(format!("down {:03}_{}", m.version, m.name));
        }
    }
    Ok(done)
}

/// The directory backups of `db` go to: `<dir of db>/backups`.
pub fn backup_dir(db: &Path) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("backups")
}

/// Writes a consistent copy of the database (`VACUUM INTO`) to
/// `backups/<stem>-<UTC time>-v<version>.db` and returns its path.
pub fn backup(conn: &Connection, db: &Path) -> Result<PathBuf, String> {
    let version = current_version(conn).map_err(|e| e.to_string())?;
    let dir = backup_dir(db);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let stem = db
        .file_stem()
        .map_or_else(|| "db".into(), |s| s.to_string_lossy().into_owned());
    let stamp: String = conn
        .query_row("SELECT strftime('%Y%m%dT%H%M%f', 'now')", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let stamp = stamp.replace('.', "");
    let dest = dir.join(format!("{stem}-{stamp}-v{version:03}.db"));
    conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])
        .map_err(|e| format!("backup to {} failed: {e}", dest.display()))?;
    Ok(dest)
}

/// The newest backup of `db`, if any.
pub fn latest_backup(db: &Path) -> Option<PathBuf> {
    let stem = db.file_stem()?.to_string_lossy().into_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(backup_dir(db))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{stem}-")) && n.ends_with(".db")
            })
        })
        .collect();
    // The timestamp in the name sorts in time order.
    files.sort();
    files.pop()
}

/// Replaces the database file with `backup`, atomically (copy beside it, then
/// rename): connections opened afterwards see the restored data.
pub fn restore(db: &Path, backup: &Path) -> Result<(), String> {
    // Refuse a file that is not a database: restoring garbage is worse than nothing.
    let check = Connection::open(backup)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        .map_err(|e| format!("{} is not a usable backup: {e}", backup.display()))?;
    if check != "ok" {
        return Err(format!(
            "{} fails its integrity check: {check}",
            backup.display()
        ));
    }
    let tmp = db.with_extension("restore-tmp");
    std::fs::copy(backup, &tmp).map_err(|e| format!("cannot copy {}: {e}", backup.display()))?;
    std::fs::rename(&tmp, db).map_err(|e| format!("cannot replace {}: {e}", db.display()))?;
    let journal = PathBuf::from(format!("{}-journal", db.display()));
    let _ = std::fs::remove_file(journal);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut st = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap();
        st.query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn shipped_migrations_match_the_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let from_dir = load_dir(&dir).unwrap();
        let emb = embedded();
        assert_eq!(
            from_dir.len(),
            emb.len(),
            "every file in migrations/ is embedded"
        );
        for (a, b) in from_dir.iter().zip(&emb) {
            assert_eq!(
                (a.version, &a.name, &a.up, &a.down),
                (b.version, &b.name, &b.up, &b.down)
            );
        }
    }

    #[test]
    fn up_and_down_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut conn = open(&db).unwrap();
        let ms = embedded();
        assert_eq!(current_version(&conn).unwrap(), 0);
        let steps = migrate_to(&mut conn, &ms, 3).unwrap();
        assert_eq!(
            steps,
            [
                "up 001_create_audits",
                "up 002_audit_results",
                "up 003_audit_attempts"
            ]
        );
        assert_eq!(current_version(&conn).unwrap(), 3);
        assert!(columns(&conn, "audits").contains(&"attempts".to_string()));
        conn.execute("INSERT INTO audits (url) VALUES ('http://a')", [])
            .unwrap();
        // Down to 2 keeps the data and drops the column.
        assert_eq!(
            migrate_to(&mut conn, &ms, 2).unwrap(),
            ["down 003_audit_attempts"]
        );
        assert!(!columns(&conn, "audits").contains(&"attempts".to_string()));
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM audits", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        migrate_to(&mut conn, &ms, 0).unwrap();
        assert!(columns(&conn, "audits").is_empty());
        let st = status(&conn, &ms).unwrap();
        assert!(st.iter().all(|(_, at)| at.is_none()));
        let e = migrate_to(&mut conn, &ms, 9).unwrap_err();
        assert!(e.to_string().contains("the latest is 003"), "{e}");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let mdir = dir.path().join("m");
        std::fs::create_dir(&mdir).unwrap();
        std::fs::write(mdir.join("001_t.up.sql"), "CREATE TABLE t (a INTEGER);").unwrap();
        std::fs::write(mdir.join("001_t.down.sql"), "DROP TABLE t;").unwrap();
        std::fs::write(
            mdir.join("002_bad.up.sql"),
            "ALTER TABLE t ADD COLUMN b INTEGER;\nINSERT INTO nope VALUES (1);",
        )
        .unwrap();
        std::fs::write(mdir.join("002_bad.down.sql"), "").unwrap();
        let ms = load_dir(&mdir).unwrap();
        let db = dir.path().join("x.db");
        let mut conn = open(&db).unwrap();
        let e = migrate_to(&mut conn, &ms, 2).unwrap_err();
        assert_eq!((e.version, e.direction), (2, "up"));
        assert!(e.message.contains("no such table: nope"), "{e}");
        assert_eq!(current_version(&conn).unwrap(), 1);
        assert_eq!(
            columns(&conn, "t"),
            ["a"],
            "the half-applied ALTER is rolled back"
        );
    }

    #[test]
    fn bad_migration_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("001_a.up.sql"), "").unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.contains("001_a.down.sql"), "{e}");
        std::fs::write(dir.path().join("001_a.down.sql"), "").unwrap();
        std::fs::write(dir.path().join("003_c.up.sql"), "").unwrap();
        std::fs::write(dir.path().join("003_c.down.sql"), "").unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.contains("without gaps"), "{e}");
        std::fs::write(dir.path().join("notes.sql"), "").unwrap();
        assert!(load_dir(dir.path()).unwrap_err().contains("notes.sql"));
    }

    #[test]
    fn backup_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut conn = open(&db).unwrap();
        migrate_to(&mut conn, &embedded(), 3).unwrap();
        conn.execute("INSERT INTO audits (url) VALUES ('http://kept')", [])
            .unwrap();
        let b = backup(&conn, &db).unwrap();
        assert!(b.starts_with(dir.path().join("backups")));
        assert!(b.to_string_lossy().ends_with("-v003.db"), "{}", b.display());
        assert_eq!(latest_backup(&db).as_deref(), Some(b.as_path()));
        conn.execute("DELETE FROM audits", []).unwrap();
        drop(conn);
        restore(&db, &b).unwrap();
        let conn = open(&db).unwrap();
        let url: String = conn
            .query_row("SELECT url FROM audits", [], |r| r.get(0))
            .unwrap();
        assert_eq!(url, "http://kept");
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, "not a database at all, not even close").unwrap();
        assert!(restore(&db, &junk)
            .unwrap_err()
            .contains("not a usable backup"));
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            path_from_url("sqlite:///data/a.db").unwrap(),
            Path::new("/data/a.db")
        );
        assert_eq!(
            path_from_url("sqlite://rel/a.db").unwrap(),
            Path::new("rel/a.db")
        );
        assert_eq!(
            path_from_url("sqlite:a.db?mode=rwc").unwrap(),
            Path::new("a.db")
        );
        assert_eq!(path_from_url("/x/y.db").unwrap(), Path::new("/x/y.db"));
        assert!(path_from_url("postgres://h/db")
            .unwrap_err()
            .contains("not a SQLite URL"));
        assert!(path_from_url("sqlite://").is_err());
    }
}
