//! The standard library: modules written in `.pipe` under `stdlib/`, embedded
//! in the binary and imported as `std/<name>`.

pub const MODULES: &[(&str, &str)] = &[
    ("docker", include_str!("../../stdlib/docker.pipe")),
    ("http", include_str!("../../stdlib/http.pipe")),
    ("notify", include_str!("../../stdlib/notify.pipe")),
    ("scan", include_str!("../../stdlib/scan.pipe")),
    ("deploy", include_str!("../../stdlib/deploy.pipe")),
    ("db", include_str!("../../stdlib/db.pipe")),
    ("prom", include_str!("../../stdlib/prom.pipe")),
];

pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
