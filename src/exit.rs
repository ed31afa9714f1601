//! Process exit codes, mapped in one place and documented in docs/exit-codes.md.

/// Everything finished as asked.
pub const SUCCESS: u8 = 0;
/// A run failed (a required step failed).
pub const RUN_FAILED: u8 = 1;
/// The pipeline is invalid, or the command line is.
pub const INVALID: u8 = 2;
/// A run stopped at a gate and is waiting for a decision; `pipe resume` continues it.
pub const WAITING: u8 = 3;
#[allow(dead_code)]
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// An error the CLI reports and maps to an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: Option<String>,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: INVALID,
            message: Some(message.into()),
        }
    }

    /// Already reported (diagnostics were printed); only the code remains.
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            message: None,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: RUN_FAILED,
            message: Some(e.to_string()),
        }
    }
}
