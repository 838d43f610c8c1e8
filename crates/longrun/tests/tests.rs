#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

//! End-to-end tests of the `longrun` binary: the CLI against a real server,
//! and Google's own Python clients against a real server (interop).

mod cli;
mod console;
mod crash;
mod interop;
mod interop_node;
mod interop_rust;
mod limits;
mod nodes;
mod readme;
mod schemathesis;
mod server;
mod support;
mod tokens;
mod worker;
