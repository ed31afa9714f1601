//! The run report (`pipe report`): what one recorded run did, gathered in
//! [`model`] from the state store and the run's log files, and rendered as a
//! self-contained HTML page ([`html`]), a Markdown summary ([`markdown`]) or
//! JSON. [`dag`] draws the DAG as SVG for the page and for `pipe graph
//! --format svg`. See docs/report.md.

pub mod dag;
pub mod html;
pub mod markdown;
pub mod model;
