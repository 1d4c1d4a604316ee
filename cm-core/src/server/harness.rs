//! Test harness (placeholder, replaced below).
