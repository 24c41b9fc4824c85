//! deploy/ against the real API server of blixt-k8s-harness (one per test binary, shared by
//! these tests): the chart and kustomize output applied by server-side apply, the AddressPool
//! CRD's validation, and the controller's RBAC exercised under its ServiceAccount through
//! impersonation. Needs tests/k8s/build.sh and deploy/tools.sh (make test runs both).

mod apply;
mod common;
mod controller;
mod crd;
mod delegation;
mod rbac;
