//! Deterministic simulation of whole clusters against the cm-core machines.
