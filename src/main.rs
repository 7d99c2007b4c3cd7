//! The `ansinh` command line: the options and the dispatch of each command to its
//! function in `cli/`, which prints; the work is in the library.

mod cli;

/// mimalloc instead of glibc malloc: the writer allocates per event, and glibc spent ~35%
/// of the ledger's CPU in malloc, free and consolidation under load (docs/BENCH.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use ansinh::app::{Connection, Runtime};
use ansinh::chain::Partition;
use ansinh::checkpoint;
use ansinh::domain::ids::{CommuneCode, HouseholdId};
use ansinh::log::LogConfig;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ansinh",
    version,
    about = "Hash-chained ledger of social-welfare disbursements on NATS JetStream"
)]
struct Cli {
    /// Where the ledger keeps its store (and the embedded nats-server its files).
    #[arg(
        long,
        env = "ANSINH_DATA_DIR",
        default_value = "ansinh-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Use this NATS server or cluster instead of starting an embedded one: one URL, or
    /// several separated by commas (nats://n1:4222,nats://n2:4222,nats://n3:4222).
    #[arg(long, env = "ANSINH_NATS_URL", global = true)]
    nats: Option<String>,
    /// Copies the cluster keeps of the event stream, the checkpoint stream, the citizen
    /// claims stream and the vault, directory, requests and jobs buckets when it creates
    /// them (3 on a 3-node cluster); an existing one with fewer is refused, and so is 1 on
    /// a server that is a node of a cluster.
    #[arg(long, env = "ANSINH_REPLICAS", default_value_t = 1, global = true,
          value_parser = clap::value_parser!(u16).range(1..=5))]
    replicas: u16,
    /// NATS credentials file (.creds) for --nats; refused without --nats.
    /// Example: --nats-creds /etc/ansinh/ledger.creds
    #[arg(long, env = "ANSINH_NATS_CREDS", global = true)]
    nats_creds: Option<PathBuf>,
    /// NATS user for --nats (refused without it), with its password in the environment
    /// variable ANSINH_NATS_PASSWORD (never on the command line). Example: --nats-user auditor
    #[arg(long, env = "ANSINH_NATS_USER", global = true)]
    nats_user: Option<String>,
    /// Prefix of this connection's reply subjects, for a NATS user allowed only its own
    /// (the shipped `auditor` user: _INBOX_auditor); for --nats only.
    /// Example: --nats-inbox-prefix _INBOX_auditor
    #[arg(long, env = "ANSINH_NATS_INBOX_PREFIX", global = true)]
    nats_inbox_prefix: Option<String>,
    /// The secrets file (64 bytes, mode 0600: the key-wrapping and blind-index keys of
    /// personal data). Every process of one ledger needs the same file; keep it outside
    /// the data directory, which holds only what can be rebuilt. Default: secrets.key in
    /// the data directory, created on first use (fine for one process).
    /// Example: --secrets /etc/ansinh/secrets.key
    #[arg(long, env = "ANSINH_SECRETS", global = true)]
    secrets: Option<PathBuf>,
    /// Event stream name (tests use their own).
    #[arg(
        long,
        env = "ANSINH_STREAM",
        default_value = "ANSINH_EVENTS",
        global = true,
        hide = true
    )]
    stream: String,
    /// Subject prefix of the event stream.
    #[arg(
        long,
        env = "ANSINH_SUBJECT_PREFIX",
        default_value = "ansinh.v1.events",
        global = true,
        hide = true
    )]
    subject_prefix: String,
    /// Checkpoint stream name (tests use their own).
    #[arg(
        long,
        env = "ANSINH_CHECKPOINT_STREAM",
        default_value = "ANSINH_CHECKPOINTS",
        global = true,
        hide = true
    )]
    checkpoint_stream: String,
    /// Subject prefix of the checkpoint stream (`<prefix>.checkpoints.<partition>`).
    #[arg(
        long,
        env = "ANSINH_CHECKPOINT_PREFIX",
        default_value = "ansinh.v1",
        global = true,
        hide = true
    )]
    checkpoint_prefix: String,
    /// Long-running commands (serve, demo) checkpoint each partition after this many
    /// new events...
    #[arg(
        long,
        env = "ANSINH_CHECKPOINT_EVERY_EVENTS",
        default_value_t = 1_000,
        global = true
    )]
    checkpoint_every_events: u64,
    /// ...and every partition with new events at least this often (seconds). Each
    /// checkpoint is kept for ever and checked by every full audit (ADR 0023).
    #[arg(
        long,
        env = "ANSINH_CHECKPOINT_EVERY_SECS",
        default_value_t = 600,
        global = true
    )]
    checkpoint_every_secs: u64,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How the process logs to stderr: `text` for people, `json` for a log collector
    /// (one object per line). The level comes from RUST_LOG (e.g. RUST_LOG=info;
    /// unset: warnings and errors).
    /// Example: --log-format json
    #[arg(
        long,
        env = "ANSINH_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: ansinh::telemetry::LogFormat,
    #[command(flatten)]
    who: cli::staff::ActorArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A province's year: households, the review, loans, monthly collections, the
    /// overdue run, a typhoon; then verify, recompute, project and summarise.
    Demo {
        /// Households per province. Example: 45000
        #[arg(long, default_value_t = 1_500)]
        households: u64,
        /// The provinces (2-digit codes), comma-separated. Example: 01,79
        #[arg(long, default_value = "01,79,92", value_parser = ansinh::input::partition_list)]
        partitions: ansinh::input::PartitionList,
        /// The year played: one the shipped standards cover (2022 to 2030). Example: 2026
        #[arg(long, default_value_t = 2026, value_parser = cli::demo::year)]
        year: i32,
        /// Share of payments the simulated gateways report failed (0 to 1).
        #[arg(long, default_value_t = 0.06)]
        gateway_failure_rate: f64,
        /// Share of payments reported returned (0 to 1).
        #[arg(long, default_value_t = 0.02)]
        gateway_return_rate: f64,
        /// Share of results the gateways post twice (0 to 1).
        #[arg(long, default_value_t = 0.05)]
        gateway_duplicate_rate: f64,
        /// A gateway's wait before each post, in milliseconds.
        #[arg(long, default_value_t = 0)]
        gateway_latency_ms: u64,
    },
    /// The household registry (staff: --as ID --role ROLE --unit UNIT).
    Household {
        #[command(subcommand)]
        command: cli::staff::HouseholdCommand,
    },
    /// The yearly eligibility review.
    Review {
        #[command(subcommand)]
        command: cli::staff::ReviewCommand,
    },
    /// Policy-credit loans.
    Loans {
        #[command(subcommand)]
        command: cli::staff::LoanCommand,
    },
    /// Cashless social-assistance payments: budgets, entitlements, runs, reconciliation.
    Payments {
        #[command(subcommand)]
        command: cli::payments::PaymentsCommand,
    },
    /// Per-commune portfolio: outstanding, overdue ratio, loans per programme.
    Portfolio {
        /// Only this commune (7 digits) [default: every commune]. Example: 0100007
        #[arg(long, value_parser = ansinh::input::commune)]
        commune: Option<CommuneCode>,
    },
    /// Debits and credits per account, checked at every event.
    TrialBalance {
        /// The provinces, comma-separated [default: every partition of the log]. Example: 01,79
        #[arg(long, value_parser = ansinh::input::partition_list)]
        partitions: Option<ansinh::input::PartitionList>,
    },
    /// Auditor tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Projections (derived state in sled).
    Projections {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// Serve the staff HTTP JSON API and web console (bearer tokens from the ledger's
    /// directory bucket; a staff file of an earlier version is imported at start).
    Serve {
        /// The address the staff API (and /metrics, /healthz, /readyz) listens on. Example: 0.0.0.0:8080
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Staff file, e.g. /etc/ansinh/staff.json [default: <data-dir>/staff.json].
        #[arg(long)]
        staff: Option<PathBuf>,
    },
    /// Operator decisions.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Play a payment gateway against the ledger at --nats: fetch instructions, post
    /// signed results (some failed, returned or posted twice). Needs no data directory.
    GatewaySim(cli::gateway::SimArgs),
    /// Append a note (an annotation with no money) to a partition's chain.
    Note {
        /// The partition (a province code). Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// The note, as recorded. Example: "quarterly audit started"
        #[arg(long, value_parser = ansinh::input::text)]
        text: String,
        /// Defaults to a fresh random key (the note is then not retry-safe).
        #[arg(long, value_parser = ansinh::input::idempotency_key)]
        idempotency_key: Option<String>,
        /// Who writes it (recorded as the event's actor). Example: staff:operator
        #[arg(long, default_value = "staff:operator", value_parser = ansinh::input::actor)]
        actor: String,
    },
    /// Append COUNT notes with up to CONCURRENCY in flight, printing "ack SEQ HASH" per
    /// acknowledged event (a load generator for operations and crash tests).
    Load {
        /// The partition appended to. Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Partition,
        /// How many notes. Example: 10000
        #[arg(long)]
        count: u64,
        /// How many in flight at once. Example: 512
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// The prefix of their idempotency keys (the same prefix again appends nothing). Example: load-1
        #[arg(long, default_value = "load", value_parser = ansinh::input::idempotency_key)]
        key_prefix: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every hash and link; prints OK per partition or the first bad event,
    /// then one line per partition for its signed checkpoints.
    Verify {
        /// Only this partition (a province code, e.g. 01, or ledger-keys); one the log has
        /// never seen is an error.
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Option<Partition>,
        /// List every checkpoint with its cosigners, not one summary line per partition
        /// (for people, printed as each is checked; not with --json, whose document
        /// gives each partition's count and latest checkpoint).
        #[arg(long)]
        checkpoints: bool,
        /// Read the ledger's streams and nothing else, as an auditor's read-only NATS
        /// user may (--nats, --nats-user auditor, --nats-inbox-prefix _INBOX_auditor): no
        /// data directory, no secrets, no bucket. The ledger's own lost-data check is not
        /// made (it needs the ledger's data directory). Nothing is created: a missing
        /// event or checkpoint stream is an error (exit 2).
        #[arg(long)]
        read_only: bool,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
        /// How many of the pinned cosigners (--cosigner) must cosign; all of them if not
        /// given. Example: --cosigners-required 2
        #[arg(long, requires = "cosigners")]
        cosigners_required: Option<usize>,
    },
    /// Re-derive every eligibility decision (class, status, validity, escaped-poverty
    /// window) from its recorded inputs and the household's previous decision; list
    /// mismatches.
    RecomputeEligibility {
        /// Only this partition. Example: 01
        #[arg(long, value_parser = ansinh::input::partition)]
        partition: Option<Partition>,
    },
    /// The audit trail of one subject, e.g. household:0100007-000001.
    Trail {
        /// What the events concern, as recorded. Example: household:0100007-000001
        #[arg(long, value_parser = ansinh::input::reference_of)]
        subject: String,
    },
    /// Publish a signed checkpoint of one partition (or every partition) now.
    Checkpoint {
        /// Only this partition [default: every one]. Example: 01 (or ledger-keys)
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Option<Partition>,
    },
    /// Check a checkpoint against what you cosigned before (your state file), your
    /// pinned ledger key and the recomputed log, then publish your cosignature and
    /// record it. Exit 1 with REFUSED when it does not extend what you cosigned (a fork,
    /// a smaller size) or its signer is not your pinned key or a later one.
    Cosign {
        /// The partition whose checkpoint is cosigned. Example: 01 (or ledger-keys)
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Partition,
        /// Tree size of the checkpoint to cosign, as `audit verify --checkpoints` lists it,
        /// e.g. 4096.
        #[arg(long)]
        size: u64,
        /// The cosigner's id (an auditor's office). Example: audit-office-hn
        #[arg(long, value_parser = ansinh::input::key_id)]
        cosigner_id: String,
        /// Your Ed25519 key file (created 0600 if missing).
        #[arg(long)]
        key: PathBuf,
        /// Your state file: the last checkpoint you cosigned of each partition, checked
        /// before each cosignature and replaced after it (docs/PROOFS.md section 7.6).
        /// Keep one per ledger and back it up; a missing file trusts the first
        /// checkpoint of each partition. Example: office-hn.cosigner-state.json
        #[arg(long)]
        state: PathBuf,
        /// The latest ledger key you know, pinned out of band: the checkpoint's signer
        /// must be this key or one registered after it. Its public key (64 hex digits; an
        /// id of 16 proves less: see docs/PROOFS.md), or a file holding it; repeatable
        /// (every one must hold).
        #[arg(long, required = true)]
        trust: Vec<String>,
    },
    /// Print (JSON) an inclusion proof of one event in a signed checkpoint.
    Prove {
        /// The partition. Example: 01
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Partition,
        /// The event's partition sequence. Example: 42
        #[arg(long)]
        seq: u64,
        /// Default: the latest checkpoint (it contains SEQ if any does).
        #[arg(long)]
        checkpoint_size: Option<u64>,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
    },
    /// Print (JSON) a proof that the log only grew between two checkpoints.
    Consistency {
        /// The partition. Example: 01
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Partition,
        /// The earlier checkpoint's size. Example: 1000
        #[arg(long)]
        from: u64,
        /// The later checkpoint's size. Example: 2000
        #[arg(long)]
        to: u64,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
    },
    /// Write an auditor bundle: the events of a household or commune with inclusion
    /// proofs, the signed checkpoints, the key history, a balance statement and a CSV.
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["household", "commune"])))]
    Export {
        /// One household's events. Example: 0100007-000001
        #[arg(long, value_parser = ansinh::input::household)]
        household: Option<HouseholdId>,
        /// One commune's events. Example: 0100007
        #[arg(long, value_parser = ansinh::input::commune)]
        commune: Option<CommuneCode>,
        /// First business date (YYYY-MM-DD) of the events to include.
        #[arg(long, value_parser = ansinh::input::date)]
        from: Option<NaiveDate>,
        /// Last business date (YYYY-MM-DD) of the events to include.
        #[arg(long, value_parser = ansinh::input::date)]
        to: Option<NaiveDate>,
        /// Publish checkpoints first, so every event of the scope is covered.
        #[arg(long)]
        checkpoint: bool,
        /// The bundle's directory (created). Example: bundle-0100007-000001
        #[arg(long)]
        out: PathBuf,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
    },
    /// Verify a bundle offline (no server): every event against the signed checkpoint,
    /// the key history, the balance statement, the CSV and the manifest. Exit 0 (OK)
    /// only with --trust; with none, a bundle that checks is UNANCHORED, exit 3 (anyone
    /// can make one with keys of their own); 1 when refused; 2 when it cannot be read.
    VerifyBundle {
        /// The bundle's folder as `audit bundle` wrote it, or the archive the staff API
        /// serves for download, e.g. bundle-0100007-000001 or bundle-0100007-000001.tar.
        dir: PathBuf,
        /// The latest ledger key you know, pinned out of band: it must be in the
        /// bundle's key history at or before the signing key. Its public key (64 hex
        /// digits; an id of 16, e.g. 3f9a0c1d2e4b5a69, proves less: see docs/PROOFS.md);
        /// repeatable (every one must hold).
        #[arg(long, value_parser = ansinh::input::pinned_key)]
        trust: Vec<String>,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
        /// How many of the pinned cosigners (--cosigner) must cosign; all of them if not
        /// given. Example: --cosigners-required 2
        #[arg(long, requires = "cosigners")]
        cosigners_required: Option<usize>,
    },
    /// List patterns to investigate: a citizen in two households, loans paid while
    /// ineligible or above their cap, money after a write-off or a death, payment
    /// instructions pending too long. Exit 1 when any is found.
    Anomalies {
        /// Instructions without a result for more than this many days are listed
        /// (0 or more, as over HTTP).
        #[arg(long, default_value_t = 10)]
        pending_days: u32,
        /// The date pending days are counted to, e.g. 2026-12-31 [default: today].
        #[arg(long, value_parser = ansinh::input::date)]
        as_of: Option<NaiveDate>,
    },
    /// Rebuild every projection from the log into a scratch store and compare it with
    /// the live one: the first difference (tree, key, both values), or OK with counts.
    RebuildCheck,
    /// Verify a proof document offline (no server): signatures, key ids, proof, hashes.
    /// Exit 0 (OK) only with --trust; with none, a document that checks is UNANCHORED,
    /// exit 3 (anyone can make one with keys of their own); 1 when refused.
    CheckProof {
        /// The proof document, as `audit prove` or the audit API wrote it, e.g. proof.json.
        file: PathBuf,
        /// Accept only checkpoints signed by these ledger keys: public keys (64 hex digits)
        /// or key ids (16, e.g. 3f9a0c1d2e4b5a69, which prove less: see docs/PROOFS.md);
        /// repeatable.
        #[arg(long, value_parser = ansinh::input::pinned_key)]
        trust: Vec<String>,
        /// A cosigner you pin (an audit office's public key, 64 hex digits, or key id,
        /// 16), obtained out of band; repeatable. Its cosignatures come before any other
        /// key's, so no number of cosignatures by other keys keeps it out of the 64 a
        /// checkpoint carries; a cosigner you did not pin is shown as UNPINNED.
        #[arg(long = "cosigner", value_parser = ansinh::input::pinned_key)]
        cosigners: Vec<String>,
        /// How many of the pinned cosigners (--cosigner) must cosign; all of them if not
        /// given. Example: --cosigners-required 2
        #[arg(long, requires = "cosigners")]
        cosigners_required: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ProjectionCommand {
    /// Apply the events not yet projected.
    CatchUp,
    /// Drop every projection and replay the log from the start.
    Rebuild,
    /// Print the per-partition summary.
    Summary,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Exclude the messages that break a partition's chain (foreign messages, or a
    /// damaged one that cannot be repaired): records the decision, signed by the ledger
    /// key, as the partition's next event; readers then pass over exactly those messages
    /// and appends resume. Nothing is deleted (docs/CHAIN.md, section 4a). Every message
    /// held since the last good event is named at once, from the first through the last.
    /// Example: admin exclude-message --partition 01 --stream-sequence 4711 --through 4790
    /// --reason "INC-2026-17"
    ExcludeMessage {
        /// The partition whose chain the message breaks. Example: 01 (or ledger-keys)
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Partition,
        /// Where the first message held is in the stream, as `audit verify` names it.
        /// Example: 4711
        #[arg(long)]
        stream_sequence: u64,
        /// Where the last message held is (default: the first; the refusal says where
        /// the run ends when more are held). Example: 4790
        #[arg(long)]
        through: Option<u64>,
        /// Why, in the operator's words (the incident's reference), recorded with it.
        #[arg(long, value_parser = ansinh::input::text)]
        reason: String,
        /// Who decides (recorded as the event's actor). Example: staff:nguyen.an
        #[arg(long, default_value = "staff:operator", value_parser = ansinh::input::actor)]
        actor: String,
    },
    /// After lost acknowledged data was reported: accept the stream's current head for
    /// PARTITION and resume appending. Refused (exit 1) when this data directory has not
    /// stopped PARTITION. Not recorded in the log: it changes this data directory's index
    /// only, so run it on each data directory that stopped the partition.
    AcceptHead {
        /// The partition whose stream head is accepted. Example: 01 (or ledger-keys)
        #[arg(long, value_parser = ansinh::input::ledger_partition)]
        partition: Partition,
    },
    /// Free a citizen's claim left over by a command that appended nothing (a crash
    /// between its claim and its commit, or a give-back that kept failing, logged at error
    /// level): the citizen could not be registered anywhere until then. Freed only when
    /// HOUSEHOLD holds the claim and none of its recorded events name the citizen;
    /// otherwise refused (exit 1), freeing nothing. Run it once that household's commands
    /// in flight are over. Example: echo 001190000001 | ansinh admin release-claim
    /// --citizen-id - --household 0100007-000123
    ReleaseClaim {
        /// The citizen whose claim is left over (12 digits), or `-` to read it from one
        /// line of stdin. Given here, it is visible to every user of the host while the
        /// command runs (ps, /proc) and stays in shell history: prefer `-`.
        /// Example: --citizen-id - (or --citizen-id 001190000001)
        #[arg(long, value_parser = cli::admin::citizen_id_arg)]
        citizen_id: cli::admin::CitizenIdArg,
        /// The household the claims say holds the citizen. Example: 0100007-000123
        #[arg(long, value_parser = ansinh::input::household)]
        household: ansinh::domain::ids::HouseholdId,
    },
    /// Replace the ledger's checkpoint-signing key; the change is an event signed by the old key.
    RotateKey,
    /// Make an HTTP API token for a caller: prints it once; the ledger's directory bucket
    /// keeps only its hash, and every running `serve` accepts it at once.
    AddStaff {
        /// The caller's id, recorded as the actor of its events. Example: staff:nguyen.an
        #[arg(long, value_parser = ansinh::input::actor)]
        id: String,
        /// The member's role: teller, credit-officer, branch-manager or auditor.
        #[arg(long, value_enum)]
        role: cli::staff::RoleArg,
        /// Commune (7 digits), province (2 digits), or "" for the head office.
        /// Example: 0100007
        #[arg(long, default_value = "", value_parser = ansinh::input::unit)]
        unit: String,
    },
    /// Sign everyone out of the web console: replaces the console's session secret, and
    /// every running `serve` refuses every session signed with the old one within
    /// 10 seconds (when it next reads the secret). Staff sign in again with their tokens.
    EndConsoleSessions,
    /// Withdraw every token of a member of staff; running processes refuse them at once.
    RemoveStaff {
        /// Example: staff:nguyen.an
        #[arg(long, value_parser = ansinh::input::actor)]
        id: String,
    },
    /// Withdraw one gateway key (the old key after a rotation, or a compromised one):
    /// running processes refuse its signatures at once, and no import (`serve` at start,
    /// `admin import-directory`) brings it back.
    RemoveGatewayKey {
        /// The key's id, as `admin add-gateway` printed it. Example: 3f2a9c0d1e4b5a67
        #[arg(long, value_parser = ansinh::input::key_id)]
        key_id: String,
    },
    /// Copy a staff file and <data-dir>/gateways.json (of earlier versions) into the
    /// ledger's directory bucket; what it already holds is left, and so is what was
    /// removed from it (`admin remove-staff`, `admin remove-gateway-key`). Running
    /// processes use the new entries at once (`serve` also imports them when it starts).
    ImportDirectory {
        /// Staff file, e.g. /etc/ansinh/staff.json [default: <data-dir>/staff.json].
        #[arg(long)]
        staff: Option<PathBuf>,
    },
    /// Move the household data keys an earlier version kept in this data directory into
    /// the ledger's shared vault bucket, then delete the local copies. Safe to run again:
    /// what the bucket already holds is counted and left. Needs the secrets file the
    /// keys were made with (--secrets).
    MigrateVault,
    /// Register a payment gateway: a new Ed25519 key pair, the private key written to
    /// FILE (0600), the public key added to the ledger's directory bucket, which every
    /// running `serve` accepts at once.
    AddGateway {
        /// The gateway's id (its NATS subjects and registry entry). Example: vcb
        #[arg(long, value_parser = ansinh::input::gateway)]
        id: ansinh::domain::payments::ids::GatewayId,
        /// Where to write the gateway's private key, for the gateway only (mode 0600). Example: vcb.key
        #[arg(long)]
        key_out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    ansinh::telemetry::init_logs(cli.log_format);
    let json = cli.json;
    match run(cli).await {
        Ok(code) => code,
        Err(e) => cli::failed(e.as_ref(), json),
    }
}

use cli::BoxError;

/// The pins of `--cosigner` and `--cosigners-required` (default: every pinned one).
fn cosigner_pins(keys: &[String], required: Option<usize>) -> checkpoint::proofs::CosignerPins {
    checkpoint::proofs::CosignerPins {
        keys: keys.to_vec(),
        required,
    }
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    // Offline: no server is started or asked.
    if let Command::Audit {
        command:
            AuditCommand::CheckProof {
                file,
                trust,
                cosigners,
                cosigners_required,
            },
    } = &cli.command
    {
        let pins = cosigner_pins(cosigners, *cosigners_required);
        let verdict = checkpoint::cli::check_proof(file, trust, &pins, cli.json)?;
        return Ok(ExitCode::from(verdict.exit_code()));
    }
    if let Command::Audit {
        command:
            AuditCommand::VerifyBundle {
                dir,
                trust,
                cosigners,
                cosigners_required,
            },
    } = &cli.command
    {
        let pins = cosigner_pins(cosigners, *cosigners_required);
        let verdict = ansinh::bundle::cli::verify_bundle(dir, trust, &pins, cli.json)?;
        return Ok(ExitCode::from(verdict.exit_code()));
    }
    // The simulated gateway opens no ledger: it is a gateway's side.
    if let Command::GatewaySim(args) = cli.command {
        return cli::gateway::sim(cli.nats.as_deref(), args, cli.json).await;
    }
    // The cosigners an auditor's command pins: the documents it makes carry them first,
    // and verify requires them.
    let cosigners = match &cli.command {
        Command::Audit {
            command:
                AuditCommand::Verify {
                    cosigners,
                    cosigners_required,
                    ..
                },
        } => cosigner_pins(cosigners, *cosigners_required),
        Command::Audit {
            command:
                AuditCommand::Prove { cosigners, .. }
                | AuditCommand::Consistency { cosigners, .. }
                | AuditCommand::Export { cosigners, .. },
        } => cosigner_pins(cosigners, Some(0)),
        _ => Default::default(),
    };
    let checkpoints = checkpoint::CheckpointConfig {
        stream_name: cli.checkpoint_stream.clone(),
        subject_prefix: cli.checkpoint_prefix.clone(),
        replicas: usize::from(cli.replicas),
        cosigners,
        ..Default::default()
    };
    let staff_file = |staff: &Option<PathBuf>| {
        staff
            .clone()
            .unwrap_or_else(|| cli.data_dir.join(ansinh::http::STAFF_FILE))
    };
    let connection = Connection {
        data_dir: cli.data_dir.clone(),
        nats_url: cli.nats.clone(),
        auth: nats_auth(&cli)?,
        secrets: cli.secrets.clone(),
        log: LogConfig {
            stream_name: cli.stream.clone(),
            subject_prefix: cli.subject_prefix.clone(),
            replicas: usize::from(cli.replicas),
        },
    };
    if let Command::Audit {
        command:
            AuditCommand::Verify {
                partition,
                checkpoints: list_checkpoints,
                read_only: true,
                ..
            },
    } = &cli.command
    {
        return cli::audit::verify_read_only(
            &connection,
            &checkpoints,
            partition.clone(),
            *list_checkpoints,
            cli.json,
        )
        .await;
    }
    let runtime = Runtime::open(&connection).await?;
    let migrating = matches!(
        cli.command,
        Command::Admin {
            command: AdminCommand::MigrateVault
        }
    );
    if let Some(code) = cli::preflight(&runtime, &cli.data_dir, migrating)? {
        runtime.close().await;
        return Ok(code);
    }
    let json = cli.json;
    let policy = checkpoint::Policy {
        every_events: cli.checkpoint_every_events,
        every: std::time::Duration::from_secs(cli.checkpoint_every_secs),
    };
    let outcome: Result<ExitCode, BoxError> = async {
        match cli.command {
            Command::Demo {
                households,
                partitions,
                year,
                gateway_failure_rate,
                gateway_return_rate,
                gateway_duplicate_rate,
                gateway_latency_ms,
            } => {
                let gateways = ansinh::demo_payments::GatewayBehaviour {
                    failure_rate: gateway_failure_rate,
                    return_rate: gateway_return_rate,
                    duplicate_rate: gateway_duplicate_rate,
                    latency_ms: gateway_latency_ms,
                };
                let partitions: Vec<String> = partitions.0.iter().map(|p| p.to_string()).collect();
                cli::demo::demo(
                    &runtime,
                    &checkpoints,
                    &cli.data_dir,
                    policy,
                    households,
                    &partitions,
                    year,
                    gateways,
                    json,
                )
                .await
            }
            Command::Household { command } => {
                cli::staff::household_command(&runtime, &cli.who, command, json).await
            }
            Command::Review { command } => {
                cli::staff::review_command(&runtime, &cli.who, command, json).await
            }
            Command::Loans { command } => {
                cli::staff::loan_command(&runtime, &cli.who, command, json).await
            }
            Command::Payments { command } => {
                cli::payments::run(
                    &runtime,
                    &checkpoints.keys_partition,
                    &cli.who,
                    command,
                    json,
                )
                .await
            }
            Command::Portfolio { commune } => {
                cli::staff::portfolio(&runtime, commune.map(|c| c.as_str().to_owned()), json).await
            }
            Command::TrialBalance { partitions } => {
                let partitions: Option<Vec<String>> =
                    partitions.map(|list| list.0.iter().map(|p| p.to_string()).collect());
                cli::staff::trial_balance(&runtime, partitions.as_deref(), json).await
            }
            Command::Audit {
                command:
                    AuditCommand::Verify {
                        partition,
                        checkpoints: list_checkpoints,
                        ..
                    },
            } => {
                cli::audit::verify_ledger(&runtime, &checkpoints, partition, list_checkpoints, json)
                    .await
            }
            Command::Audit {
                command: AuditCommand::Checkpoint { partition },
            } => {
                cli::proofs::checkpoint(&runtime, &checkpoints, &cli.data_dir, partition, json)
                    .await
            }
            Command::Audit {
                command:
                    AuditCommand::Cosign {
                        partition,
                        size,
                        cosigner_id,
                        key,
                        state,
                        trust,
                    },
            } => {
                let request = cli::proofs::CosignRequest {
                    partition,
                    size,
                    cosigner_id,
                    key,
                    state,
                    trust,
                };
                cli::proofs::cosign(&runtime, &checkpoints, &request, json).await
            }
            Command::Audit {
                command:
                    AuditCommand::Prove {
                        partition,
                        seq,
                        checkpoint_size,
                        ..
                    },
            } => {
                cli::proofs::prove(
                    &runtime,
                    &checkpoints,
                    &partition,
                    seq,
                    checkpoint_size,
                    json,
                )
                .await
            }
            Command::Audit {
                command:
                    AuditCommand::Consistency {
                        partition,
                        from,
                        to,
                        ..
                    },
            } => cli::proofs::consistency(&runtime, &checkpoints, &partition, from, to, json).await,
            Command::Audit {
                command:
                    AuditCommand::Export {
                        household,
                        commune,
                        from,
                        to,
                        checkpoint,
                        out,
                        ..
                    },
            } => {
                let scope = cli::proofs::scope(household, commune);
                let request = ansinh::bundle::export::ExportRequest { scope, from, to };
                cli::proofs::export(
                    &runtime,
                    &checkpoints,
                    &cli.data_dir,
                    &request,
                    checkpoint,
                    &out,
                    json,
                )
                .await
            }
            Command::Audit {
                command: AuditCommand::CheckProof { .. } | AuditCommand::VerifyBundle { .. },
            }
            | Command::GatewaySim(_) => unreachable!("run before the server starts"),
            Command::Admin {
                command: AdminCommand::RotateKey,
            } => Ok(cli::exit_code(
                checkpoint::cli::rotate(&runtime, &checkpoints, &cli.data_dir, json).await?,
            )),
            Command::Audit {
                command: AuditCommand::RecomputeEligibility { partition },
            } => cli::audit::recompute_eligibility(&runtime, &checkpoints, partition, json).await,
            Command::Audit {
                command:
                    AuditCommand::Anomalies {
                        pending_days,
                        as_of,
                    },
            } => {
                cli::audit::anomalies(&runtime, &checkpoints, pending_days.into(), as_of, json)
                    .await
            }
            Command::Audit {
                command: AuditCommand::RebuildCheck,
            } => cli::audit::rebuild_check(&runtime, json).await,
            Command::Audit {
                command: AuditCommand::Trail { subject },
            } => cli::audit::trail(&runtime, &subject, json).await,
            Command::Projections { command } => match command {
                ProjectionCommand::CatchUp => cli::projections::catch_up(&runtime, json).await,
                ProjectionCommand::Rebuild => cli::projections::rebuild(&runtime, json).await,
                ProjectionCommand::Summary => cli::projections::summary(&runtime, json).await,
            },
            Command::Serve { listen, staff } => {
                cli::serve::serve(
                    &runtime,
                    &checkpoints,
                    &cli.data_dir,
                    policy,
                    listen,
                    &staff_file(&staff),
                )
                .await
            }
            Command::Admin {
                command: AdminCommand::AddStaff { id, role, unit },
            } => cli::admin::add_staff(&runtime, &id, role, &unit, json).await,
            Command::Admin {
                command: AdminCommand::AddGateway { id, key_out },
            } => cli::gateway::add_gateway(&runtime, id.as_str(), &key_out, json).await,
            Command::Admin {
                command: AdminCommand::RemoveStaff { id },
            } => cli::admin::remove_staff(&runtime, &id, json).await,
            Command::Admin {
                command: AdminCommand::EndConsoleSessions,
            } => cli::admin::end_console_sessions(&runtime, json).await,
            Command::Admin {
                command: AdminCommand::RemoveGatewayKey { key_id },
            } => cli::admin::remove_gateway_key(&runtime, &key_id, json).await,
            Command::Admin {
                command: AdminCommand::ImportDirectory { staff },
            } => {
                let registry = cli.data_dir.join(ansinh::gateway::keys::REGISTRY_FILE);
                cli::admin::import_directory(&runtime, &staff_file(&staff), &registry, json).await
            }
            Command::Admin {
                command: AdminCommand::MigrateVault,
            } => cli::admin::migrate_vault(&runtime, json).await,
            Command::Admin {
                command: AdminCommand::AcceptHead { partition },
            } => cli::admin::accept_head(&runtime, &partition, json),
            Command::Admin {
                command:
                    AdminCommand::ReleaseClaim {
                        citizen_id,
                        household,
                    },
            } => {
                let citizen_id = citizen_id.resolve()?;
                cli::admin::release_claim(&runtime, &citizen_id, &household, json).await
            }
            Command::Admin {
                command:
                    AdminCommand::ExcludeMessage {
                        partition,
                        stream_sequence,
                        through,
                        reason,
                        actor,
                    },
            } => {
                cli::admin::exclude_message(
                    &runtime,
                    &cli.data_dir,
                    partition,
                    stream_sequence..=through.unwrap_or(stream_sequence),
                    reason,
                    actor,
                    json,
                )
                .await
            }
            Command::Note {
                partition,
                text,
                idempotency_key,
                actor,
            } => cli::load::note(&runtime, partition, text, idempotency_key, actor, json).await,
            Command::Load {
                partition,
                count,
                concurrency,
                key_prefix,
            } => {
                cli::load::load(
                    &runtime,
                    partition.as_str(),
                    count,
                    concurrency.max(1),
                    &key_prefix,
                )
                .await
            }
        }
    }
    .await;
    // Every command ends by closing the ledger: its writers finish and keep their
    // books, so the next start replays only what came after.
    runtime.close().await;
    outcome
}

/// How this process authenticates to NATS, from the options and the environment.
/// Refused without `--nats`, before the password is looked for: the embedded server has
/// its own users.
fn nats_auth(cli: &Cli) -> Result<ansinh::app::NatsAuth, BoxError> {
    let mut auth = ansinh::app::NatsAuth {
        credentials: cli.nats_creds.clone(),
        user: cli.nats_user.clone().map(|user| (user, String::new())),
        inbox_prefix: cli.nats_inbox_prefix.clone(),
    };
    auth.check_needs_url(cli.nats.as_deref())?;
    if let Some((user, password)) = &mut auth.user {
        *password = std::env::var(NATS_PASSWORD_ENV).map_err(|_| {
            format!("--nats-user {user} needs its password in the environment variable {NATS_PASSWORD_ENV}")
        })?;
    }
    Ok(auth)
}

/// Where `--nats-user`'s password is read from.
const NATS_PASSWORD_ENV: &str = "ANSINH_NATS_PASSWORD";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every option of every command says what it takes, and an option that takes a
    /// free value gives an example of it (or lists the values it accepts): `--help` is
    /// the clerk's manual.
    #[test]
    fn every_option_says_what_it_takes_with_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} --{id}: no description"));
                    continue;
                }
                let takes_value = arg.get_action().takes_values();
                let listed = !arg.get_possible_values().is_empty();
                let defaulted = !arg.get_default_values().is_empty();
                let example = ["e.g.", "Example", "example", "(", "0100007", "2026"]
                    .iter()
                    .any(|m| help.contains(m));
                if takes_value && !listed && !defaulted && !example {
                    missing.push(format!("{path} --{id}: no example: {help}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "ansinh", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    /// The command line's checkpoint policy is the library's: every ten minutes, or
    /// after 1,000 new events (ADR 0023: every checkpoint is kept and audited for ever).
    #[test]
    fn the_default_checkpoint_policy_is_the_librarys() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["ansinh", "serve"]).unwrap();
        let policy = ansinh::checkpoint::Policy::default();
        assert_eq!(cli.checkpoint_every_secs, policy.every.as_secs());
        assert_eq!(cli.checkpoint_every_events, policy.every_events);
        assert_eq!(policy.every, std::time::Duration::from_secs(600));
    }
}
