//! apimetrics-agent: reads a Django payment app's database read-only, computes how many
//! transactions were modified in the last 24 hours by API and status, and gets that aggregate
//! out of the site: a local `/metrics`, Pushgateway pushes and remote-write with a durable queue.
//!
//! The modules form layers, each importing only from those below it (ARCHITECTURE.md):
//! [`common`] → [`source`] → [`snapshot`], `exposition` and `history` → `http` and `telemetry` →
//! the outlets (`pushgateway`, [`remote_write`]) → [`config`] → the run loop ([`run`], [`check`],
//! `scrape`, `http_server`, `status_page`, `ticker`) → [`demo`]. [`manual`] writes the man page
//! from the command line's definition, which `main` gives it. [`populate`] makes sample
//! databases from [`common`] alone.

pub mod check;
pub mod common;
pub mod config;
pub mod demo;
pub(crate) mod exposition;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod http_server;
pub mod manual;
pub mod populate;
pub(crate) mod pushgateway;
pub mod remote_write;
pub mod run;
pub(crate) mod scrape;
pub mod snapshot;
pub mod source;
pub(crate) mod status_page;
pub mod telemetry;
pub(crate) mod ticker;
