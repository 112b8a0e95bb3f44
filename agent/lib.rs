//! apimetrics-agent: reads a Django payment app's SQLite database read-only, computes how many
//! transactions were modified in the last 24 hours by API and status, and gets that aggregate
//! out of the site: a local `/metrics` now, push outlets next.
//!
//! The data's way: [`config`] → [`source`] (SQLite) → [`snapshot`] (the aggregate) →
//! outlets ([`scrape`]), driven by [`schedule`] and [`run`]. See ARCHITECTURE.md.

pub mod config;
pub mod demo;
pub mod exposition;
pub mod http;
pub mod populate;
pub mod pushgateway;
pub mod remote_write;
pub mod run;
pub mod schedule;
pub mod scrape;
pub mod snapshot;
pub mod source;
pub mod status_page;
pub mod telemetry;
pub mod window_count;
