use crate::agent::testkit::*;
