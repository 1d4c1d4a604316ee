use super::testkit::*;
