//! The integration tests, built into one binary: the agent as a user runs it, against databases
//! made from `schema/django.sql` (and one made by Django itself), checked by what a user sees.

mod alert_rules;
mod bounded_ticks;
mod check;
mod cli;
mod dashboard;
mod database_states;
mod django;
mod logs;
mod mariadb;
mod mariadb_support;
mod module_graph;
mod no_harm;
mod package;
mod peers;
mod postgres;
mod postgres_support;
mod pushgateway;
mod reload;
mod remote_write;
mod run;
mod scrape_limits;
mod secrets;
mod service;
mod short_reads;
mod soak;
mod source;
mod status_page;
mod support;
mod wal_users;
