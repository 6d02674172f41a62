//! The server among the tools around it, in one test binary (each binary links the
//! whole crate): the official Open Inference Protocol client, hot reload of the model
//! repository under load, and the deployment files.

#[path = "../common/mod.rs"]
mod common;

mod deploy_files;
mod open_inference;
mod reload;
