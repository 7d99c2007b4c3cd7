//! Shared by the gateway tests: a nats-server running the shipped accounts file
//! (deploy/nats/ansinh-accounts.conf) with fresh passwords, and the test gateway keys.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ansinh::checkpoint::sign::KeyPair;
use ansinh::gateway::client::GatewayClient;
use ansinh::gateway::keys::{GatewayKey, Registry};
use ansinh::gateway::{self, DEMO_GATEWAYS};
use ansinh::nats_server::{NatsServer, Sync};

/// A nats-server with the shipped accounts, and the passwords it was given.
pub struct Net {
    pub server: NatsServer,
    pub passwords: BTreeMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

pub fn password() -> String {
    hex::encode(uuid::Uuid::new_v4().as_bytes())
}

pub fn start_net() -> Net {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(gateway::ACCOUNTS_CONF_FILE),
        gateway::ACCOUNTS_CONF,
    )
    .unwrap();
    let mut passwords = BTreeMap::new();
    passwords.insert(gateway::LEDGER_USER, password());
    passwords.insert(gateway::AUDITOR_USER, password());
    for g in DEMO_GATEWAYS {
        passwords.insert(g.user, password());
    }
    let mut env = vec![
        (
            gateway::LEDGER_PASSWORD_ENV,
            passwords[gateway::LEDGER_USER].as_str(),
        ),
        (
            gateway::AUDITOR_PASSWORD_ENV,
            passwords[gateway::AUDITOR_USER].as_str(),
        ),
    ];
    for g in DEMO_GATEWAYS {
        env.push((g.password_env, passwords[g.user].as_str()));
    }
    let include = format!("include {:?}", gateway::ACCOUNTS_CONF_FILE);
    let server = NatsServer::start_with(dir.path(), Sync::Always, &include, &env)
        .expect("start nats-server with the shipped accounts (run scripts/install-nats-server.sh)");
    Net {
        server,
        passwords,
        _dir: dir,
    }
}

impl Net {
    /// How the ledger user connects: its user and password.
    pub fn ledger_options(&self) -> async_nats::ConnectOptions {
        async_nats::ConnectOptions::with_user_and_password(
            gateway::LEDGER_USER.into(),
            self.passwords[gateway::LEDGER_USER].clone(),
        )
    }

    /// The gateway server's own connection, as the ledger user.
    pub async fn server_connection(&self) -> gateway::server::Connection {
        gateway::server::connect(self.server.url(), self.ledger_options())
            .await
            .expect("the gateway server connects")
    }

    pub async fn ledger_client(&self) -> async_nats::Client {
        self.ledger_options()
            .connect(self.server.url())
            .await
            .expect("the ledger user connects")
    }

    pub async fn gateway(&self, id: &str) -> GatewayClient {
        let user = format!("gw-{id}");
        GatewayClient::connect(
            &self.server.url(),
            id,
            &user,
            &self.passwords[user.as_str()],
        )
        .await
        .expect("the gateway user connects")
    }
}

/// A gateway server bound for `sink` on the net's ledger connection, serving in the
/// background until `stop` is called.
pub struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub async fn start<S: gateway::server::PostSink>(net: &Net, sink: Arc<S>) -> Self {
        let bound = gateway::server::bind(
            net.server_connection().await,
            gateway::DEFAULT_SUBJECT_PREFIX,
            shared_registry(),
            sink,
        )
        .await
        .expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.expect("serve ends cleanly");
    }
}

pub fn key(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32])
}

/// `registry()` as a server takes it: a directory that could change while it serves.
pub fn shared_registry() -> ansinh::directory::SharedRegistry {
    ansinh::directory::Shared::new((*registry()).clone())
}

/// vcb signs with key 1, momo with key 2, vnpost with key 3.
pub fn registry() -> Arc<Registry> {
    let keys = [("vcb", 1), ("momo", 2), ("vnpost", 3)]
        .into_iter()
        .map(|(id, n)| GatewayKey {
            gateway_id: id.into(),
            key_id: key(n).key_id().into(),
            public_key: key(n).public_key(),
        })
        .collect();
    Arc::new(Registry::new(keys).unwrap())
}

/// A signed HTTP request as a gateway sends it.
pub struct Signed {
    pub path: String,
    pub body: Vec<u8>,
    pub timestamp: String,
    pub key_id: String,
    pub signature: String,
}

pub fn sign_request(signer: &KeyPair, method: &str, path: &str, body: &[u8], at_ms: i64) -> Signed {
    let timestamp = at_ms.to_string();
    let bytes = ansinh::gateway::sign::http_request_bytes(&timestamp, method, path, body);
    Signed {
        path: path.into(),
        body: body.to_vec(),
        timestamp,
        key_id: signer.key_id().into(),
        signature: hex::encode(ansinh::gateway::sign::sign_http_request(signer, &bytes)),
    }
}
