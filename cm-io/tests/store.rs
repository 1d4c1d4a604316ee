//! Durable machine state: load at start, ordered writes reported as `WriteCompleted`.

use std::fs;

use cm_core::WriteToken;
use cm_core::codec::{self, DecodeError};
use cm_core::io::{PersistState, WriteCompleted};
use cm_io::store::{Store, StoreError, StoreWriter};
use tokio::sync::mpsc;

fn persisted(token: u64, value: u64) -> PersistState {
    PersistState {
        token: WriteToken(token),
        bytes: codec::encode_persisted(&value).unwrap(),
    }
}

#[test]
fn load_is_none_before_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        Store::new(dir.path().join("server.state")).load().unwrap(),
        None
    );
}

#[test]
fn a_written_state_loads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("server.state"));
    let p = persisted(1, 42);
    assert_eq!(
        store.write(&p),
        WriteCompleted {
            token: WriteToken(1),
            result: Ok(())
        }
    );
    let bytes = store.load().unwrap().unwrap();
    assert_eq!(bytes, p.bytes);
    assert_eq!(codec::decode_persisted::<u64>(&bytes).unwrap(), 42);
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.state");
    let mut bytes = persisted(1, 42).bytes;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let err = Store::new(&path).load().unwrap_err();
    assert!(matches!(
        err,
        StoreError::Corrupt {
            source: DecodeError::Checksum,
            ..
        }
    ));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    fs::write(&path, b"not a state").unwrap();
    assert!(matches!(
        Store::new(&path).load(),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn a_failed_write_is_reported_in_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("server.state");
    let done = Store::new(&path).write(&persisted(7, 1));
    assert_eq!(done.token, WriteToken(7));
    let err = done.result.unwrap_err();
    assert!(err.contains("missing"), "{err}");
}

#[tokio::test]
async fn the_writer_completes_writes_in_submission_order_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("agent.state"));
    let (tx, mut rx) = mpsc::channel::<WriteCompleted>(16);
    let writer = StoreWriter::spawn(store.clone(), 16, tx, |w| w);
    for i in 1..=5 {
        writer.submit(persisted(i, i * 10)).unwrap();
    }
    for i in 1..=5 {
        let done = rx.recv().await.unwrap();
        assert_eq!(
            done,
            WriteCompleted {
                token: WriteToken(i),
                result: Ok(())
            }
        );
    }
    let bytes = store.load().unwrap().unwrap();
    assert_eq!(codec::decode_persisted::<u64>(&bytes).unwrap(), 50);
    assert_eq!(writer.refused(), 0);
}

#[tokio::test]
async fn a_full_queue_refuses_with_a_failed_completion_for_that_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("agent.state"));
    // Nobody reads the completions: the writer stalls after its first write, so the queue
    // (capacity 1) fills.
    let (tx, _rx) = mpsc::channel::<WriteCompleted>(1);
    let writer = StoreWriter::spawn(store, 1, tx, |w| w);
    let mut refusal = None;
    for i in 1..=10 {
        if let Err(done) = writer.submit(persisted(i, i)) {
            refusal = Some(done);
            break;
        }
    }
    let done = refusal.expect("a bounded queue must refuse eventually");
    assert!(done.result.unwrap_err().contains("full"));
    assert_eq!(writer.refused(), 1);
}
