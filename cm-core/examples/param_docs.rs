//! Prints the parameter reference generated from `cm-core/src/params.rs`:
//! `cargo run -p cm-core --example param_docs > docs/parameters.md`
//! (a test in cm-core fails when the file in the repository differs).

fn main() {
    print!("{}", cm_core::params::reference_markdown());
}
