//! `audit-api migrate`: status, backup, up, down, restore, with exit codes a
//! pipeline can act on. `scripts/run_migrations.sh` is a thin wrapper.
//!
//! | exit | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | a migration failed; the database was restored from the backup |
//! | 2 | usage error |
//! | 3 | the database or the migrations cannot be read, or the backup failed |
//! | 4 | a migration failed AND the restore failed: restore by hand |

use std::path::{Path, PathBuf};

use crate::db;

const USAGE: &str = "usage: audit-api migrate [--dir MIGRATIONS] [--no-backup] COMMAND
  status            applied and pending migrations, then the current version
  version           the current version alone
  backup            copy the database to backups/ beside it
  up [--to N]       back up, then apply migrations (all, or up to N)
  down --to N       back up, then revert migrations above N
  restore [FILE]    replace the database with FILE (default: the newest backup)
DATABASE_URL names the database (sqlite:///path/to/audit.db).";

/// Runs the migrate command line `args` (after `migrate`); returns the exit code.
pub fn main(args: &[String], var: &dyn Fn(&str) -> Option<String>) -> i32 {
    let mut dir: Option<PathBuf> = None;
    let mut backup = true;
    let mut to: Option<u32> = None;
    let mut rest: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().map(PathBuf::from),
            "--no-backup" => backup = false,
            "--to" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) => to = Some(n),
                None => {
                    eprintln!("--to needs a version number\n{USAGE}");
                    return 2;
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => rest.push(other),
        }
    }
    let Some((&command, extra)) = rest.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let path = match crate::config::database_from_env(var) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 3;
        }
    };
    let migrations = match &dir {
        Some(d) => match db::load_dir(d) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                return 3;
            }
        },
        None => db::embedded(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(parent) {
            eprintln!("error: cannot create {}: {e}", parent.display());
            return 3;
        }
    }
    let mut conn = match db::open(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", path.display());
            return 3;
        }
    };
    let latest = migrations.last().map_or(0, |m| m.version);
    match (command, extra) {
        ("status", []) => match db::status(&conn, &migrations) {
            Ok(rows) => {
                println!("database {}", path.display());
                for (m, at) in &rows {
                    match at {
                        Some(at) => println!("  applied  {:03}_{}  {at}", m.version, m.name),
                        None => println!("  pending  {:03}_{}", m.version, m.name),
                    }
                }
                let v = db::current_version(&conn).unwrap_or(0);
                println!("version {v} of {latest}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                3
            }
        },
        ("version", []) => match db::current_version(&conn) {
            Ok(v) => {
                println!("{v}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                3
            }
        },
        ("backup", []) => match db::backup(&conn, &path) {
            Ok(b) => {
                println!("backed up to {}", b.display());
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                3
            }
        },
        ("up", []) => apply(
            &mut conn,
            &path,
            &migrations,
            to.unwrap_or(latest),
            backup,
            "up",
        ),
        ("down", []) => match to {
            Some(n) => apply(&mut conn, &path, &migrations, n, backup, "down"),
            None => {
                eprintln!("down needs --to N (0 reverts everything)\n{USAGE}");
                2
            }
        },
        ("restore", files) if files.len() <= 1 => {
            drop(conn);
            let file = match files.first() {
                Some(f) => PathBuf::from(f),
                None => match db::latest_backup(&path) {
                    Some(f) => f,
                    None => {
                        eprintln!(
                            "error: no backup of {} in {}",
                            path.display(),
                            db::backup_dir(&path).display()
                        );
                        return 3;
                    }
                },
            };
            match db::restore(&path, &file) {
                Ok(()) => {
                    println!("restored {} from {}", path.display(), file.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    4
                }
            }
        }
        _ => {
            eprintln!("unknown migrate command `{}`\n{USAGE}", rest.join(" "));
            2
        }
    }
}

fn apply(
    conn: &mut rusqlite::Connection,
    path: &Path,
    migrations: &[db::Migration],
    target: u32,
    backup: bool,
    direction: &str,
) -> i32 {
    let before = db::current_version(conn).unwrap_or(0);
    if before == target {
        println!("already at version {target}");
        return 0;
    }
    if (direction == "up") != (target > before) {
        eprintln!(
            "error: the database is at version {before}: `{direction} --to {target}` would go the other way (use `{}`)",
            if direction == "up" { "down" } else { "up" }
        );
        return 2;
    }
    let saved = if backup {
        match db::backup(conn, path) {
            Ok(b) => {
                println!("backed up to {}", b.display());
                Some(b)
            }
            Err(e) => {
                eprintln!("error: {e}: not migrating without a backup (--no-backup to force)");
                return 3;
            }
        }
    } else {
        None
    };
    match db::migrate_to(conn, migrations, target) {
        Ok(steps) => {
            for s in &steps {
                println!("  {s}");
            }
            println!("version {before} -> {target}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            let Some(b) = saved else {
                eprintln!("no backup was taken (--no-backup): the failed migration's transaction was rolled back");
                return 1;
            };
            match db::restore(path, &b) {
                Ok(()) => {
                    eprintln!(
                        "restored the database from {} (version {before})",
                        b.display()
                    );
                    1
                }
                Err(r) => {
                    eprintln!(
                        "error: the restore failed too: {r}\n  restore by hand: copy {} over {}",
                        b.display(),
                        path.display()
                    );
                    4
                }
            }
        }
    }
}
