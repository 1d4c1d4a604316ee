//! Shared test fixtures (compiled for tests only).

/// A 3-node cluster (n1, n2 in AZ1; n3 in AZ2), a CMS on each node, one group 6001/6002/6003.
pub(crate) const THREE_NODES: &str = r#"
name = "demo"

[[az]]
name = "AZ1"
priority = 1

[[az]]
name = "AZ2"
priority = 2

[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/cm/n1"
monitor_port = 17001
cms_port = 17101

[[node]]
id = 2
name = "n2"
address = "127.0.0.2"
az = "AZ1"
state_dir = "/tmp/cm/n2"
monitor_port = 17001
cms_port = 17101

[[node]]
id = 3
name = "n3"
address = "127.0.0.3"
az = "AZ2"
state_dir = "/tmp/cm/n3"
monitor_port = 17001
cms_port = 17101

[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/tmp/pg/dn1"
port = 5432
[[group.member]]
instance = 6002
node = 2
data_dir = "/tmp/pg/dn2"
port = 5432
[[group.member]]
instance = 6003
node = 3
data_dir = "/tmp/pg/dn3"
port = 5432
"#;
