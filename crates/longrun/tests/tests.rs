#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

//! End-to-end tests of the `longrun` binary: the CLI against a real server,
//! and Google's own Python clients against a real server (interop).

mod cli;
mod interop;
mod server;
mod support;
mod worker;
