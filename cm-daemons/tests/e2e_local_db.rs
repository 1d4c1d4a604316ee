//! End-to-end: the launcher's database creation on real PostgreSQL (no daemon needed): DN 1 is
//! initdb'd, DNs 2 and 3 are base backups of it naming their own `application_name`, and
//! nothing is left running.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use cm_daemons::local::{DEFAULT_PG_BIN, Paths, Ports, db, instance_of, procs};

#[test]
fn e2e_local_db_three_data_directories_from_one_initdb() {
    if !Path::new(DEFAULT_PG_BIN).join("initdb").exists() {
        eprintln!("skipped: no PostgreSQL in {DEFAULT_PG_BIN}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = Paths {
        dir: t.path().to_path_buf(),
    };
    let ports = Ports::pick().unwrap();
    db::create_databases(&paths, &ports, Path::new(DEFAULT_PG_BIN), false).expect("databases");
    let pg_uid = cm_io::process::OsUser::lookup("postgres")
        .unwrap()
        .uid
        .as_raw();
    for n in 1..=3 {
        let d = paths.data_dir(n);
        assert!(d.join("PG_VERSION").exists(), "{}", d.display());
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), pg_uid);
        assert!(procs::postmaster_pid(&d).is_none(), "DN {n} left running");
        let standby = d.join("standby.signal").exists();
        assert_eq!(standby, n != 1, "standby.signal of DN {n}");
        if n != 1 {
            let auto = std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap();
            let want = format!("application_name=dn_{}", instance_of(n));
            assert!(auto.contains(&want), "{auto}");
        }
        let conf = std::fs::read_to_string(d.join("postgresql.conf")).unwrap();
        assert!(conf.contains("fsync = off"));
        assert!(conf.contains("wal_keep_size = 256MB"));
    }
}
