//! Starts and supervises a local `nats-server` with JetStream and fsync-before-ack.
//!
//! Used by `ansinh` when no `--nats URL` is given, and by the tests and benches
//! (each starts its own on a free loopback port with a fresh store).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

/// Environment variable naming the nats-server binary to use.
pub const SERVER_ENV: &str = "ANSINH_NATS_SERVER";
/// How long a starting server may take to say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Oldest server with `sync_interval: always` and atomic batch publish.
pub const MIN_VERSION: (u32, u32) = (2, 12);
/// Longest line of the server's output read as one; a longer one is read in pieces.
const OUTPUT_LINE_BYTES_MAX: u64 = 64 * 1024;
/// Lines of a starting server's output kept to say why it did not start.
const START_OUTPUT_LINES_MAX: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary found: install one (the README's `scripts/install-nats-server.sh`).
    #[error(
        "no nats-server found: set {SERVER_ENV}, put nats-server (2.12 or newer) on PATH, \
         or run scripts/install-nats-server.sh (installs the pinned 2.15.1 into .tools/bin)"
    )]
    NotFound,
    /// The binary is too old to fsync before acknowledging or to publish atomic batches.
    #[error(
        "{path}: version {version} is older than 2.12 (needs sync_interval and atomic batches)"
    )]
    TooOld { path: PathBuf, version: String },
    /// The server did not start; its output is included.
    #[error("nats-server did not start: {0}")]
    Start(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether acknowledged writes are fsynced first. `Always` is the ledger's setting;
/// `Lazy` exists only so the bench can measure what durability costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    Always,
    Lazy,
}

/// A running server; killed when dropped.
pub struct NatsServer {
    child: Arc<Mutex<Child>>,
    exited: Exited,
    /// Set by `stop`: the server's exit is then ours, not a failure.
    stopping: Arc<AtomicBool>,
    pub port: u16,
    pub store_dir: PathBuf,
}

/// Whether a server this process started has exited, and how: set once, by the thread
/// that drains its output, when the output ends and the process is reaped. A process
/// whose embedded server died cannot reach its log, so its liveness probe reads this.
/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Exited(Arc<OnceLock<String>>);

impl Exited {
    /// How the server exited (its wait status), or None while it runs.
    pub fn status(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id (the bench reads its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// Whether the server has exited, readable after this is moved or dropped.
    pub fn exited(&self) -> Exited {
        self.exited.clone()
    }

    /// Finds the binary: $ANSINH_NATS_SERVER, then ./.tools/bin (the install script's
    /// target, also relative to the crate for tests), then PATH.
    pub fn find_binary() -> Result<PathBuf, ServerError> {
        if let Some(path) = std::env::var_os(SERVER_ENV) {
            let path = PathBuf::from(path);
            // Named explicitly: use it or say so; never fall back to another binary.
            return if path.is_file() {
                Ok(path)
            } else {
                Err(ServerError::NotFound)
            };
        }
        let local = [
            PathBuf::from(".tools/bin/nats-server"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server"),
        ];
        if let Some(found) = local.into_iter().find(|p| p.is_file()) {
            return Ok(found);
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("nats-server"))
                    .find(|p| p.is_file())
            })
            .ok_or(ServerError::NotFound)
    }

    /// Starts a server in `dir` (config, store and log live there) on a free loopback port.
    pub fn start(dir: &Path, sync: Sync) -> Result<Self, ServerError> {
        Self::start_with(dir, sync, "", &[])
    }

    /// Like [`start`](Self::start), with `extra_config` appended to the generated
    /// configuration (for example `include "ansinh-accounts.conf"`: nats-server resolves
    /// includes relative to the configuration file, which is written in `dir`) and `env`
    /// set for the server process only, so secrets such as passwords referenced by
    /// `$NAME` in the configuration never stand in a file.
    ///
    /// An empty value in `env` is refused: `password: $NAME` would become an empty
    /// password.
    pub fn start_with(
        dir: &Path,
        sync: Sync,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, ServerError> {
        if let Some((name, _)) = env.iter().find(|(_, value)| value.is_empty()) {
            return Err(ServerError::Start(format!(
                "environment variable {name} for the server is empty"
            )));
        }
        let binary = Self::find_binary()?;
        check_version(&binary)?;
        std::fs::create_dir_all(dir)?;
        let store_dir = dir.join("jetstream");
        let port = free_port()?;
        let sync_line = match sync {
            Sync::Always => "sync_interval: always",
            Sync::Lazy => "",
        };
        let mut config = format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n  {sync_line}\n}}\n",
            store = store_dir.display()
        );
        if !extra_config.is_empty() {
            config.push_str(extra_config);
            config.push('\n');
        }
        let config_path = dir.join("nats-server.conf");
        std::fs::write(&config_path, config)?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(&binary, &config_path, env, port, store_dir, SERVER_READY)
    }

    /// Starts a cluster of `nodes` servers on loopback, each with its own store in
    /// `dir/n<i>`, routes to every other node, `sync_interval` as given. Node `i` is named
    /// `n<i>` (the `server_name` JetStream reports as a stream's leader). The servers
    /// are ready to accept connections; JetStream elects its leaders a moment later, so
    /// a first request may answer "no leader" and should be retried.
    pub fn start_cluster(dir: &Path, nodes: usize, sync: Sync) -> Result<Vec<Self>, ServerError> {
        // The ports are free when chosen, but another process may take one before the
        // node binds it (tests start clusters side by side): then start again with
        // other ports. The nodes already started are stopped when dropped.
        let mut attempt = 1;
        loop {
            match Self::start_cluster_once(dir, nodes, sync) {
                Err(ServerError::Start(log))
                    if log.contains("address already in use")
                        && attempt < CLUSTER_START_ATTEMPTS_MAX =>
                {
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    fn start_cluster_once(dir: &Path, nodes: usize, sync: Sync) -> Result<Vec<Self>, ServerError> {
        let binary = Self::find_binary()?;
        check_version(&binary)?;
        // Every port is chosen before any node starts, so each knows its routes.
        let ports: Vec<(u16, u16)> = (0..nodes)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, ServerError>>()?;
        let sync_line = match sync {
            Sync::Always => "sync_interval: always",
            Sync::Lazy => "",
        };
        // A name of this cluster's own: a route to a port that another cluster's node took
        // meanwhile (clusters started side by side) is then refused for its name, instead
        // of joining the two clusters into one whose JetStream places nothing.
        let name = format!("ansinh-{}", uuid::Uuid::new_v4().simple());
        let mut servers = Vec::with_capacity(nodes);
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let store_dir = node_dir.join("jetstream");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, route))| format!("nats-route://127.0.0.1:{route}"))
                .collect();
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n  {sync_line}\n}}\ncluster {{\n  name: {name}\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{routes}]\n}}\n",
                store = store_dir.display(),
                routes = routes.join(", ")
            );
            let config_path = node_dir.join("nats-server.conf");
            std::fs::write(&config_path, config)?;
            servers.push(Self::spawn(
                &binary,
                &config_path,
                Vec::new(),
                *port,
                store_dir,
                CLUSTER_NODE_READY,
            )?);
        }
        Ok(servers)
    }

    /// Starts the server again from its configuration and store (after `kill` or
    /// `stop`), on the same port: what an operator's restart after a crash does.
    pub fn restart(&self) -> Result<Self, ServerError> {
        let binary = Self::find_binary()?;
        let config = self
            .store_dir
            .parent()
            .expect("the store lives in the server's directory")
            .join("nats-server.conf");
        let ready = if std::fs::read_to_string(&config)?.contains("\ncluster {") {
            CLUSTER_NODE_READY
        } else {
            SERVER_READY
        };
        Self::spawn(
            &binary,
            &config,
            Vec::new(),
            self.port,
            self.store_dir.clone(),
            ready,
        )
    }

    /// Kills the server at once (SIGKILL: no chance to close its files), then reaps it:
    /// what a crash or a pulled plug does.
    pub fn kill(&self) {
        let mut child = self.child.lock().expect("child lock");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn spawn(
        binary: &Path,
        config: &Path,
        env: Vec<(String, String)>,
        port: u16,
        store_dir: PathBuf,
        ready: &'static [&'static str],
    ) -> Result<Self, ServerError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Arc<Mutex<Child>>, String>>();
        let binary = binary.to_path_buf();
        let config = config.to_path_buf();
        let exited = Exited::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let (exit, stopped) = (exited.clone(), stopping.clone());
        // The server is spawned from a thread that lives exactly as long as the server
        // (it drains the server's output, and ends once it has reaped the server), and
        // PR_SET_PDEATHSIG ties the server to that thread: if our process dies, even by
        // SIGKILL, the server dies too. It runs in a process group of its own, so a
        // signal to ours (Ctrl-C at a terminal) reaches only us: `serve` drains its
        // requests and closes the ledger while the server still answers, and stops it
        // after (`stop`, when the `NatsServer` is dropped).
        std::thread::spawn(move || {
            let mut command = Command::new(&binary);
            command
                .arg("-c")
                .arg(&config)
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            #[cfg(target_os = "linux")]
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    if libc::setpgid(0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = match command.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let stderr = child.stderr.take().expect("stderr piped");
            let child = Arc::new(Mutex::new(child));
            let mut ready_tx = Some((ready_tx, child.clone()));
            let mut unseen: Vec<&str> = ready.to_vec();
            let mut tail: std::collections::VecDeque<String> = Default::default();
            drain(stderr, |line| {
                if let Some((tx, child)) = ready_tx.take() {
                    unseen.retain(|marker| !line.contains(marker));
                    if unseen.is_empty() {
                        let _ = tx.send(Ok(child));
                    } else {
                        if tail.len() == START_OUTPUT_LINES_MAX {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_owned());
                        ready_tx = Some((tx, child));
                    }
                } else if line.contains("[ERR]") || line.contains("[FTL]") {
                    // What fails in the supervised server (a full disk, a store it cannot
                    // write) reaches the operator's log at the level it has there.
                    tracing::error!(target: "nats_server", "{line}");
                } else if line.contains("[WRN]") || line.contains("Slow Consumer") {
                    // So do its warnings, and a client dropped as a slow consumer, which
                    // the server logs only as [INF] though every ack and reply it held
                    // for the client is lost with it.
                    tracing::warn!(target: "nats_server", "{line}");
                }
            });
            // The output ends when the server exits: reap it and say how. (`stop` and
            // `kill` may have reaped it already; the status is kept either way.)
            let status = match child.lock().expect("child lock").wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            let _ = exit.0.set(status.clone());
            match ready_tx {
                Some((tx, _)) => {
                    let _ = tx.send(Err(Vec::from(tail).join("\n")));
                }
                None if stopped.load(Ordering::SeqCst) => {
                    tracing::debug!(target: "nats_server", %status, "nats-server stopped");
                }
                None => tracing::error!(
                    target: "nats_server",
                    %status,
                    "nats-server exited on its own: nothing this process does on NATS can work any more"
                ),
            }
        });
        let child = ready_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| ServerError::Start(format!("no {ready:?} within the start timeout")))?
            .map_err(ServerError::Start)?;
        Ok(Self {
            child,
            exited,
            stopping,
            port,
            store_dir,
        })
    }

    /// Stops the server gracefully (SIGTERM lets it close its files), then reaps it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut child = self.child.lock().expect("child lock");
        // Already gone (killed and reaped): its pid may belong to another process now.
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        #[cfg(unix)]
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let _ = child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts of a cluster before a port taken by another process fails it.
const CLUSTER_START_ATTEMPTS_MAX: u32 = 3;

/// The lines a lone server prints once it takes clients.
const SERVER_READY: &[&str] = &["Server is ready"];
/// The lines a cluster node prints once it takes clients and routes. Its route listener
/// binds after "Server is ready": a route port another process took meanwhile ends the
/// node with a fatal error a moment later, and the other nodes then run as a cluster of
/// two on which JetStream places no three-replica stream, ever.
const CLUSTER_NODE_READY: &[&str] = &["Server is ready", "Listening for route connections"];

/// Hands `output` to `line` line by line until it ends, each line read as UTF-8 with
/// whatever is not replaced (a server's line is never a reason to stop reading: the
/// reader's thread ending would kill the server, PR_SET_PDEATHSIG), and without its end
/// of line.
fn drain(output: impl Read, mut line: impl FnMut(&str)) {
    let mut output = BufReader::new(output);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match output
            .by_ref()
            .take(OUTPUT_LINE_BYTES_MAX)
            .read_until(b'\n', &mut bytes)
        {
            Ok(0) => return,
            Ok(_) => line(String::from_utf8_lossy(&bytes).trim_end_matches(['\n', '\r'])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A pipe that cannot be read any more: as good as ended.
            Err(_) => return,
        }
    }
}

fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn check_version(binary: &Path) -> Result<(), ServerError> {
    let out = Command::new(binary).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // "nats-server: v2.15.1"
    let version = text.rsplit('v').next().unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_VERSION {
        return Err(ServerError::TooOld {
            path: binary.to_path_buf(),
            version: text,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_that_is_not_utf8_does_not_end_the_output() {
        let output: &[u8] = b"[INF] one\n\xff\xfe [WRN] two\r\nthree";
        let mut lines = Vec::new();
        super::drain(output, |line| lines.push(line.to_owned()));
        assert_eq!(lines, ["[INF] one", "\u{fffd}\u{fffd} [WRN] two", "three"]);
    }

    /// A node's route listener binds after it says "Server is ready"; a route port taken
    /// meanwhile ends the node a moment later. Taken for started, the cluster would run on
    /// two nodes, and JetStream would place no three-replica stream on it, ever.
    #[test]
    fn a_cluster_node_whose_route_port_is_taken_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let binary = super::NatsServer::find_binary().expect("nats-server installed");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let route_port = taken.local_addr().unwrap().port();
        let (port, peer) = (super::free_port().unwrap(), super::free_port().unwrap());
        let store_dir = dir.path().join("jetstream");
        let config = format!(
            "server_name: n0\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: {store:?}\n}}\ncluster {{\n  name: taken\n  listen: 127.0.0.1:{route_port}\n  routes: [nats-route://127.0.0.1:{peer}]\n}}\n",
            store = store_dir.display()
        );
        let config_path = dir.path().join("nats-server.conf");
        std::fs::write(&config_path, config).unwrap();
        let started = super::NatsServer::spawn(
            &binary,
            &config_path,
            Vec::new(),
            port,
            store_dir,
            super::CLUSTER_NODE_READY,
        );
        match started {
            Err(super::ServerError::Start(log)) => {
                assert!(log.contains("address already in use"), "{log}")
            }
            Err(other) => panic!("another error: {other}"),
            Ok(_) => panic!("a node without its route listener was taken for started"),
        }
    }
}
