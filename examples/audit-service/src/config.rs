//! Configuration from the environment, validated at startup: every problem
//! is reported at once, and the process exits with status 78 (EX_CONFIG)
//! instead of starting half-configured.

use std::path::PathBuf;

/// Exit status for a configuration error (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// The API's settings. See README.md for each variable.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: PathBuf,
    pub port: u16,
    pub api_token: String,
    pub app_env: String,
    pub cors_origins: Vec<String>,
    /// Share of requests (0..=1) answered 500 on purpose: the rollback demo.
    pub fail_rate: f64,
    /// New audits are refused with 503 beyond this many queued ones.
    pub max_queue: i64,
    pub build: Build,
}

/// What the image was built from (its build args, passed on as env).
#[derive(Clone, Debug, Default)]
pub struct Build {
    pub version: String,
    pub git_sha: String,
    pub build_date: String,
}

impl Build {
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Build {
        let or = |k: &str, d: &str| var(k).filter(|v| !v.is_empty()).unwrap_or_else(|| d.into());
        Build {
            version: or("APP_VERSION", env!("CARGO_PKG_VERSION")),
            git_sha: or("GIT_SHA", "unknown"),
            build_date: or("BUILD_DATE", "unknown"),
        }
    }
}

pub fn database_from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    let url = var("DATABASE_URL")
        .filter(|v| !v.is_empty())
        .ok_or("DATABASE_URL is not set (e.g. sqlite:///data/audit.db)")?;
    crate::db::path_from_url(&url)
}

pub fn port_from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<u16, String> {
    match var("PORT").filter(|v| !v.is_empty()) {
        None => Ok(8080),
        Some(p) => p
            .parse()
            .map_err(|_| format!("PORT `{p}` is not a port number")),
    }
}

impl Config {
    /// Reads and checks every variable; all problems are returned together.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let database = database_from_env(var).map_err(|e| errors.push(e)).ok();
        let port = port_from_env(var).map_err(|e| errors.push(e)).ok();
        let app_env = var("APP_ENV").unwrap_or_else(|| "development".into());
        let api_token = var("API_TOKEN").unwrap_or_default();
        if api_token.is_empty() {
            errors.push("API_TOKEN is not set: POST /audits needs a bearer token to check (a secret: pass it from the environment, never from an env file in git)".into());
        } else if api_token.len() < 16 {
            errors.push(format!(
                "API_TOKEN is {} characters long: use at least 16",
                api_token.len()
            ));
        }
        let cors_origins: Vec<String> = var("CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let broken = var("AUDIT_BROKEN").is_some_and(|v| v == "1" || v == "true");
        let fail_rate = match var("FAIL_RATE").filter(|v| !v.is_empty()) {
            None if broken => 1.0,
            None => 0.0,
            Some(v) => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    errors.push(format!("FAIL_RATE `{v}` is not a number from 0 to 1"));
                    0.0
                }
            },
        };
        let max_queue = match var("MAX_QUEUE").filter(|v| !v.is_empty()) {
            None => 1000,
            Some(v) => v.parse().unwrap_or_else(|_| {
                errors.push(format!("MAX_QUEUE `{v}` is not a whole number"));
                1000
            }),
        };
        if app_env == "production" {
            if var("DEBUG").is_some_and(|v| v == "true" || v == "1") {
                errors.push("DEBUG is on in production: remove it from the production env".into());
            }
            if cors_origins.is_empty() || cors_origins.iter().any(|o| o == "*") {
                errors.push(
                    "CORS_ORIGINS must list the allowed origins in production (no `*`)".into(),
                );
            }
            if fail_rate > 0.0 && !broken {
                errors.push("FAIL_RATE is set in production".into());
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            database: database.unwrap_or_default(),
            port: port.unwrap_or(8080),
            api_token,
            app_env,
            cors_origins,
            fail_rate,
            max_queue,
            build: Build::from_env(var),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_env(&|k| m.get(k).cloned())
    }

    #[test]
    fn every_problem_is_reported() {
        let e = cfg(&[("PORT", "x"), ("FAIL_RATE", "2")]).unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("DATABASE_URL"));
        assert!(e[1].contains("PORT `x`"));
        assert!(e[2].contains("API_TOKEN is not set"));
        assert!(e[3].contains("FAIL_RATE `2`"));
    }

    #[test]
    fn production_is_strict() {
        let base = [
            ("DATABASE_URL", "sqlite:///d/a.db"),
            ("API_TOKEN", "0123456789abcdef"),
            ("APP_ENV", "production"),
        ];
        let mut v = base.to_vec();
        v.extend([("DEBUG", "true"), ("CORS_ORIGINS", "*")]);
        let e = cfg(&v).unwrap_err();
        assert!(e[0].contains("DEBUG"), "{e:?}");
        assert!(e[1].contains("CORS_ORIGINS"), "{e:?}");
        let mut v = base.to_vec();
        v.push(("CORS_ORIGINS", "https://audit.example.com"));
        let c = cfg(&v).unwrap();
        assert_eq!(c.cors_origins, ["https://audit.example.com"]);
        assert_eq!(c.port, 8080);
        assert!(c.fail_rate.abs() < f64::EPSILON);
    }

    #[test]
    fn broken_builds_fail_every_request() {
        let c = cfg(&[
            ("DATABASE_URL", "a.db"),
            ("API_TOKEN", "0123456789abcdef"),
            ("AUDIT_BROKEN", "1"),
        ])
        .unwrap();
        assert!((c.fail_rate - 1.0).abs() < f64::EPSILON);
    }
}
