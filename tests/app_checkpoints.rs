//! Long-running commands checkpoint by themselves: the app start path used by `serve`
//! and the demo, and `ansinh serve` itself, publish checkpoints with no explicit
//! `audit checkpoint`.

mod common;

use std::io::BufRead;
use std::time::Duration;

use ansinh::app::{Connection, Runtime};
use ansinh::chain::Partition;
use ansinh::checkpoint::Policy;
use ansinh::checkpoint::sign::CheckpointBody;
use ansinh::proto;
use futures::StreamExt;
use prost::Message;

use common::*;

/// The next checkpoint published on `subscription`; the timeout only bounds a failure.
async fn next_checkpoint(subscription: &mut async_nats::Subscriber) -> CheckpointBody {
    let message = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("a checkpoint within the bound")
        .expect("subscription open");
    let signed = proto::SignedCheckpoint::decode(message.payload.as_ref()).unwrap();
    CheckpointBody::decode(&signed.checkpoint).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_start_path_checkpoints_every_n_events_and_stops_cleanly() {
    let (log, config) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::open(&Connection {
        data_dir: dir.path().to_path_buf(),
        nats_url: Some(server_url()),
        auth: Default::default(),
        log: log.clone(),
        secrets: None,
    })
    .await
    .unwrap();
    let partition = Partition::new("01").unwrap();
    let mut published = client()
        .await
        .subscribe(config.checkpoint_subject(&partition))
        .await
        .unwrap();
    let policy = Policy {
        every_events: 3,
        every: Duration::from_secs(3600),
    };
    let task = runtime
        .start_checkpoints(&config, dir.path(), policy)
        .await
        .unwrap();
    let mut hashes = Vec::new();
    for i in 0..3 {
        let receipt = runtime
            .ledger
            .append(note("01", &format!("n{i}"), "Xã Tân Phú"))
            .await
            .unwrap();
        hashes.push(receipt.hash.0);
    }
    let body = next_checkpoint(&mut published).await;
    assert_eq!(body.tree_size, 3);
    assert_eq!(body.root, ansinh::merkle::root(&hashes));
    // Stopping hands the checkpointer back, knowing what it published.
    let checkpointer = task.stop().await;
    assert_eq!(checkpointer.checkpointed_size(&partition), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansinh_serve_publishes_checkpoints_and_exits_cleanly_on_sigterm() {
    let (log, config) = fresh_checkpointed();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ansinh");
    let common_args = |cmd: &mut std::process::Command| {
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--nats", &server_url()])
            .args(["--stream", &log.stream_name])
            .args(["--subject-prefix", &log.subject_prefix])
            .args(["--checkpoint-stream", &config.stream_name])
            .args(["--checkpoint-prefix", &config.subject_prefix]);
    };
    let mut add = std::process::Command::new(bin);
    common_args(&mut add);
    let added = add
        .args(["admin", "add-staff", "--id", "staff:t", "--role", "teller"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");

    let partition = Partition::new("01").unwrap();
    let mut published = client()
        .await
        .subscribe(config.checkpoint_subject(&partition))
        .await
        .unwrap();
    let mut serve = std::process::Command::new(bin);
    common_args(&mut serve);
    let mut child = serve
        .args([
            "--checkpoint-every-events",
            "2",
            "--checkpoint-every-secs",
            "3600",
        ])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The checkpoint task is running once the API says it serves.
    let stderr = child.stderr.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if line.unwrap_or_default().contains("serving the staff API") {
                return true;
            }
        }
        false
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("serve starts within the bound")
            .unwrap(),
        "serve did not start"
    );
    // Another writer of the same log (the HTTP path is not needed to make events).
    let (ledger, _store) = ledger(&log).await;
    for i in 0..2 {
        ledger
            .append(note("01", &format!("s{i}"), "Hội Liên hiệp Phụ nữ"))
            .await
            .unwrap();
    }
    let body = next_checkpoint(&mut published).await;
    assert_eq!(body.tree_size, 2);
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
}
