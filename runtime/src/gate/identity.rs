//! Who is deciding, and whether an `approvers` entry names them. An entry is
//! `*` (anyone), a user name, or the name of a Unix group (as the system's
//! group database knows it: `/etc/group`, or NSS) whose members include the
//! user. See docs/gates.md for what this identity is worth.

use nix::unistd::{getuid, Group, User};

/// The user making a decision or starting a run: `PIPE_USER` when set and
/// not empty, else the OS user of this process.
pub fn current_user() -> String {
    if let Ok(u) = std::env::var("PIPE_USER") {
        let u = u.trim();
        if !u.is_empty() {
            return u.to_string();
        }
    }
    match User::from_uid(getuid()) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| format!("uid-{}", getuid())),
    }
}

/// Whether `entry` of an approvers list names `user`.
pub fn entry_matches(entry: &str, user: &str) -> bool {
    if entry == "*" || entry == user {
        return true;
    }
    match Group::from_name(entry) {
        Ok(Some(g)) => {
            g.mem.iter().any(|m| m == user)
                || matches!(User::from_name(user), Ok(Some(u)) if u.gid == g.gid)
        }
        _ => false,
    }
}

/// The first entry of `approvers` that names `user`.
pub fn approver_entry<'a>(approvers: &'a [String], user: &str) -> Option<&'a str> {
    approvers
        .iter()
        .map(String::as_str)
        .find(|e| entry_matches(e, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_star_and_groups() {
        assert!(entry_matches("*", "anyone"));
        assert!(entry_matches("alice", "alice"));
        assert!(!entry_matches("alice", "bob"));
        // `root` is a member of group `root` by its primary group on every Unix.
        assert!(entry_matches("root", "root"));
        assert!(!entry_matches("no-such-group-of-pipe", "root"));
        let list = vec!["bob".to_string(), "*".to_string()];
        assert_eq!(approver_entry(&list, "carol"), Some("*"));
    }
}
