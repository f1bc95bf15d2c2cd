//! Runnable examples of the call-engine crates: see the `*.rs` files beside this one (`cargo run -p call-engine-examples --example NAME`).
