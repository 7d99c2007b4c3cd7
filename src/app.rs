//! Wiring at the edge: where the data lives, which NATS to use, and opening the ledger.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::checkpoint::{CheckpointConfig, CheckpointError, CheckpointTask, Checkpointer, Policy};
use crate::log::{Ledger, LedgerStore, LogConfig, writer::LostData};
use crate::nats_server::{NatsServer, Sync};
use crate::personal::{Vault, VaultError};
use crate::projection::Projector;
use crate::service::Service;

/// The secrets file (key-wrapping key and blind-index key) inside the data directory.
pub const SECRETS_FILE: &str = "secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Server(#[from] crate::nats_server::ServerError),
    #[error("connecting to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::log::StoreError),
    #[error(transparent)]
    Append(#[from] crate::log::AppendError),
    #[error(transparent)]
    Stream(#[from] crate::log::StreamError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("projections: {0}")]
    Projection(String),
    /// Credentials given without `--nats`: the embedded server has users of its own, so
    /// they would be ignored and the process would quietly run a ledger of its own. Give
    /// `--nats`, or unset them.
    #[error(
        "{options} only apply with --nats (ANSINH_NATS_URL): without it ansinh starts an \
         embedded nats-server of its own in the data directory and connects as its ledger \
         user; give --nats with the server's URL, or unset them"
    )]
    AuthWithoutNats { options: String },
    /// The server is one node of a cluster and `--replicas` asks for one copy: streams and
    /// buckets made now would live on that node alone, and its loss would lose them.
    #[error(
        "the NATS server at {url} is a node of cluster {cluster:?}, and --replicas is 1: the \
         ledger's streams and buckets would be made on one node, and lost with it; give \
         --replicas 3 (or ANSINH_REPLICAS=3) on a 3-node cluster"
    )]
    OneReplicaOnCluster { url: String, cluster: String },
}

/// Who this process is to NATS, and where its replies come back.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// A credentials file (.creds: a JWT and its nkey seed).
    pub credentials: Option<PathBuf>,
    /// A user and its password (e.g. the read-only `auditor` of the shipped accounts).
    pub user: Option<(String, String)>,
    /// The prefix of this connection's reply subjects, when its permissions allow only
    /// its own (`_INBOX_auditor`); None: `_INBOX`.
    pub inbox_prefix: Option<String>,
}

impl NatsAuth {
    /// The options that set this, as the command line names them (empty: none).
    pub fn options_given(&self) -> Vec<&'static str> {
        [
            (
                self.credentials.is_some(),
                "--nats-creds (ANSINH_NATS_CREDS)",
            ),
            (self.user.is_some(), "--nats-user (ANSINH_NATS_USER)"),
            (
                self.inbox_prefix.is_some(),
                "--nats-inbox-prefix (ANSINH_NATS_INBOX_PREFIX)",
            ),
        ]
        .into_iter()
        .filter_map(|(given, option)| given.then_some(option))
        .collect()
    }

    /// Refuses what is set here when no `--nats` URL is given (`nats_url` None).
    pub fn check_needs_url(&self, nats_url: Option<&str>) -> Result<(), AppError> {
        let given = self.options_given();
        if nats_url.is_none() && !given.is_empty() {
            return Err(AppError::AuthWithoutNats {
                options: given.join(", "),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for NatsAuth {
    // Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("credentials", &self.credentials)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// How to reach NATS: our own embedded server, or an existing one.
#[derive(Clone, Debug)]
pub struct Connection {
    pub data_dir: PathBuf,
    /// None: start and supervise a local nats-server inside `data_dir`.
    pub nats_url: Option<String>,
    pub auth: NatsAuth,
    pub log: LogConfig,
    /// The secrets file (key-wrapping and blind-index keys); None: `SECRETS_FILE` in
    /// `data_dir`, which suits one process. Several processes of one ledger are each
    /// given the same file, kept outside their data directories.
    pub secrets: Option<PathBuf>,
}

impl Connection {
    pub fn secrets_path(&self) -> PathBuf {
        self.secrets
            .clone()
            .unwrap_or_else(|| self.data_dir.join(SECRETS_FILE))
    }
}

/// The users of an embedded server: those of the shipped accounts file
/// (deploy/nats/ansinh-accounts.conf), so that it grants what a deployment grants: only
/// the ledger's user may publish on the event and checkpoint subjects, the auditor may
/// only read the streams, each gateway only its own subjects. A password is taken from
/// the environment variable the accounts file names when the operator set it (a gateway
/// that connects from outside needs to know its own), else made at random for this run
/// and never written anywhere: then only this process can use that user.
#[derive(Clone)]
pub struct EmbeddedUsers {
    /// Each user with the environment variable the accounts file reads its password
    /// from, and that password.
    users: Vec<(&'static str, &'static str, String)>,
}

impl EmbeddedUsers {
    fn from_environment_or_random() -> Self {
        let mut names = vec![
            (
                crate::gateway::LEDGER_USER,
                crate::gateway::LEDGER_PASSWORD_ENV,
            ),
            (
                crate::gateway::AUDITOR_USER,
                crate::gateway::AUDITOR_PASSWORD_ENV,
            ),
        ];
        names.extend(
            crate::gateway::DEMO_GATEWAYS
                .iter()
                .map(|g| (g.user, g.password_env)),
        );
        let users = names
            .into_iter()
            .map(|(user, env)| {
                let password = std::env::var(env)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(random_password);
                (user, env, password)
            })
            .collect();
        Self { users }
    }

    /// The password of `user` (e.g. "gw-vcb"), for this process's own connections.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(u, _, _)| *u == user)
            .map(|(_, _, p)| p.as_str())
    }

    /// The environment of the server process: each password under its variable.
    fn server_env(&self) -> Vec<(&'static str, &str)> {
        self.users
            .iter()
            .map(|(_, env, password)| (*env, password.as_str()))
            .collect()
    }
}

/// The account of deploy/nats/ansinh-accounts.conf, where the streams live.
const EMBEDDED_ACCOUNT: &str = "ANSINH";

fn random_password() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    hex::encode(bytes)
}

/// Starts the embedded server in `dir` with the shipped accounts and `users`' passwords.
fn start_embedded(dir: &Path, users: &EmbeddedUsers) -> Result<NatsServer, AppError> {
    std::fs::create_dir_all(dir).map_err(crate::nats_server::ServerError::from)?;
    std::fs::write(
        dir.join(crate::gateway::ACCOUNTS_CONF_FILE),
        crate::gateway::ACCOUNTS_CONF,
    )
    .map_err(crate::nats_server::ServerError::from)?;
    // Versions before the users kept the streams in the server's global account; they
    // move, once, to the accounts file's account (the server is not running yet).
    let accounts = dir.join("jetstream").join("jetstream");
    let (global, ours) = (accounts.join("$G"), accounts.join(EMBEDDED_ACCOUNT));
    if global.is_dir() && !ours.exists() {
        std::fs::rename(&global, &ours).map_err(crate::nats_server::ServerError::from)?;
    }
    let include = format!("include {:?}", crate::gateway::ACCOUNTS_CONF_FILE);
    Ok(NatsServer::start_with(
        dir,
        Sync::Always,
        &include,
        &users.server_env(),
    )?)
}

/// An open ledger with everything it depends on; the embedded server (if any) stops
/// when this is dropped.
pub struct Runtime {
    pub ledger: Ledger,
    pub lost: Vec<LostData>,
    pub client: async_nats::Client,
    pub vault: Arc<Vault>,
    pub projector: Arc<Projector>,
    /// The NATS URL the ledger uses (the embedded server's, or the one given), for
    /// other connections of this process (the demo's simulated gateways).
    pub nats_url: String,
    /// The embedded server's users and passwords; None with `--nats`.
    pub embedded_users: Option<EmbeddedUsers>,
    /// Who the ledger is to NATS, for this process's other connections.
    auth: NatsAuth,
    /// Handed out by `service()`: one per process, so its clones share the claims batcher.
    service: Service,
    _server: Option<NatsServer>,
}

impl Runtime {
    pub async fn open(connection: &Connection) -> Result<Self, AppError> {
        connection
            .auth
            .check_needs_url(connection.nats_url.as_deref())?;
        std::fs::create_dir_all(&connection.data_dir)
            .map_err(crate::nats_server::ServerError::from)?;
        let (server, url, users) = match &connection.nats_url {
            Some(url) => (None, url.clone(), None),
            None => {
                let users = EmbeddedUsers::from_environment_or_random();
                let server = start_embedded(&connection.data_dir.join("nats"), &users)?;
                let url = server.url();
                (Some(server), url, Some(users))
            }
        };
        let auth = match &users {
            Some(users) => NatsAuth {
                user: Some((
                    crate::gateway::LEDGER_USER.to_owned(),
                    users
                        .password(crate::gateway::LEDGER_USER)
                        .expect("made above")
                        .to_owned(),
                )),
                ..NatsAuth::default()
            },
            None => connection.auth.clone(),
        };
        let client = connect(&url, &auth).await?;
        if let Some(cluster) = client.server_info().cluster
            && connection.log.replicas < 2
        {
            return Err(AppError::OneReplicaOnCluster { url, cluster });
        }
        if connection.nats_url.is_some() && connection.secrets.is_none() {
            // A ledger on a shared server outlives any one data directory, and
            // OPERATIONS.md lets an operator delete one; the default secrets file would go
            // with it, and every household's sealed data with that.
            tracing::warn!(
                secrets = %connection.secrets_path().display(),
                "the secrets file is inside the data directory (no --secrets given): deleting \
                 this directory would make every household's sealed personal data unreadable; \
                 give every process --secrets with a path outside it"
            );
        }
        let store = LedgerStore::open(&connection.data_dir.join("ledger.sled"))?;
        let projector =
            Arc::new(Projector::of_store(&store).map_err(|e| AppError::Projection(e.to_string()))?);
        let (ledger, lost) = Ledger::open(client.clone(), connection.log.clone(), store).await?;
        let vault = Arc::new(
            Vault::open(
                ledger.jetstream(),
                &connection.log.stream_name,
                connection.log.replicas,
                &connection.secrets_path(),
            )
            .await?,
        );
        let service = Service::new(ledger.clone(), vault.clone(), projector.clone());
        Ok(Self {
            ledger,
            lost,
            client,
            vault,
            projector,
            nats_url: url,
            embedded_users: users,
            auth,
            service,
            _server: server,
        })
    }
}

impl Runtime {
    /// Starts the background checkpointer of a long-running command (`serve`, the
    /// demo) under `policy`, signing with the ledger key in `data_dir`. Stop it with
    /// `CheckpointTask::stop` before the runtime goes, so a checkpoint in progress
    /// completes.
    pub async fn start_checkpoints(
        &self,
        config: &CheckpointConfig,
        data_dir: &Path,
        policy: Policy,
    ) -> Result<CheckpointTask, CheckpointError> {
        let checkpointer = Checkpointer::open(
            self.client.clone(),
            self.ledger.clone(),
            config.clone(),
            self.key_home(data_dir),
        )
        .await?;
        CheckpointTask::spawn(checkpointer, policy).await
    }

    /// Where this ledger's checkpoint-signing key lives: its vault bucket, shared by
    /// every process (a key file of an earlier version in `data_dir` is moved in).
    pub fn key_home(&self, data_dir: &Path) -> crate::checkpoint::checkpointer::KeyHome {
        crate::checkpoint::checkpointer::KeyHome::Vault {
            vault: self.vault.clone(),
            legacy_dir: data_dir.to_path_buf(),
        }
    }

    pub fn service(&self) -> Service {
        self.service.clone()
    }

    /// Whether the embedded server has exited (None with `--nats`), for the liveness probe.
    pub fn embedded_server(&self) -> Option<crate::nats_server::Exited> {
        self._server.as_ref().map(NatsServer::exited)
    }

    /// The gateway server's own connection (`gateway::server::connect`), as the ledger's
    /// user: gateway requests are never read on the connection the log writer gets its
    /// acknowledgements on.
    pub async fn gateway_connection(
        &self,
    ) -> Result<crate::gateway::server::Connection, crate::gateway::server::ServeError> {
        let (servers, options) = connect_options(&self.nats_url, &self.auth)
            .await
            .map_err(|e| crate::gateway::server::ServeError::Connect(e.to_string()))?;
        crate::gateway::server::connect(servers, options.name("ansinh-gateways")).await
    }

    /// Closes the ledger: the partition writers finish their batches and save their
    /// books (`log::snapshot`). Bounded, because with NATS gone the last flush would
    /// wait for ever; past the bound nothing is lost (every acknowledged event is on
    /// the stream), only the next start replays more.
    pub async fn close(&self) {
        match tokio::time::timeout(CLOSE_WAIT_MAX, self.ledger.clone().close()).await {
            Ok(Ok(())) => {
                tracing::info!("the ledger closed: its writers finished and kept their books")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the ledger did not close cleanly"),
            Err(_) => tracing::warn!(
                seconds = CLOSE_WAIT_MAX.as_secs(),
                "the ledger did not close in time"
            ),
        }
    }
}

/// Longest a command waits for the ledger to close at its end.
pub const CLOSE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn connect(url: &str, auth: &NatsAuth) -> Result<async_nats::Client, AppError> {
    let (servers, options) = connect_options(url, auth).await?;
    options
        .connect(servers)
        .await
        .map_err(|e| AppError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

/// How often a connection asks its server whether it is still there.
pub const NATS_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The servers `url` names and the options of a connection as `auth`, for `connect` and
/// for a process's other connections (`Runtime::gateway_connection`).
pub async fn connect_options(
    url: &str,
    auth: &NatsAuth,
) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions), AppError> {
    let mut options = match (&auth.credentials, &auth.user) {
        (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| AppError::Connect {
                url: url.to_string(),
                reason: format!("credentials {}: {e}", path.display()),
            })?,
        (None, Some((user, password))) => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        (None, None) => async_nats::ConnectOptions::new(),
    };
    if let Some(prefix) = &auth.inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
    }
    // A cluster is named by several URLs; the client fails over between them.
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|one| {
            one.trim().parse().map_err(|e| AppError::Connect {
                url: url.to_string(),
                reason: format!("{one:?} is not a NATS URL: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let options = options
        .name("ansinh")
        // A server that stops answering without closing the connection (frozen, its
        // machine paused) is left for another once two pings go unanswered: with the
        // client's default of a minute that took minutes, with every append and read of
        // the process waiting on it.
        .ping_interval(NATS_PING_INTERVAL)
        // Disconnects, slow-consumer drops and server errors reach the operator's log:
        // a request that then times out is otherwise a mystery.
        .event_callback(|event| async move {
            match event {
                // What this process does to its own connection (it closes or drains it
                // at the end of every command), and its reconnection: no warning.
                async_nats::Event::Connected
                | async_nats::Event::Closed
                | async_nats::Event::Draining => tracing::debug!(target: "nats", "{event}"),
                _ => tracing::warn!(target: "nats", "{event}"),
            }
        });
    Ok((servers, options))
}
