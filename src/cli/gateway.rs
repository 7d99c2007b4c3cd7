//! `ansinh gateway-sim` and `ansinh admin add-gateway`: printing only; the work is in
//! `ansinh::gateway` and the ledger's directory (`ansinh::directory`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ansinh::app::Runtime;
use ansinh::gateway::client::GatewayClient;
use ansinh::gateway::keys;
use ansinh::gateway::server::{STATUS_ACCEPTED, STATUS_DUPLICATE};
use ansinh::gateway::sim::{self, SimConfig};

use super::{BoxError, open_directory};

#[derive(clap::Args)]
pub struct SimArgs {
    /// The gateway to play, e.g. vcb.
    #[arg(long, value_parser = ansinh::input::gateway)]
    gateway: ansinh::domain::payments::ids::GatewayId,
    /// Its Ed25519 key file (from `admin add-gateway`).
    #[arg(long)]
    key: PathBuf,
    /// NATS user (default: gw-<gateway>).
    #[arg(long)]
    nats_user: Option<String>,
    /// NATS password of that user, e.g. the one in the gateway's credentials letter.
    #[arg(long, env = "ANSINH_GATEWAY_NATS_PASSWORD", hide_env_values = true)]
    nats_password: String,
    /// Share of payments that fail.
    #[arg(long, default_value_t = 0.1)]
    failure_rate: f64,
    /// Share of payments returned after paying out.
    #[arg(long, default_value_t = 0.02)]
    return_rate: f64,
    /// Share of results posted twice.
    #[arg(long, default_value_t = 0.05)]
    duplicate_rate: f64,
    /// Processing time before each post.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Fetch-and-post rounds (a round that finds nothing ends the run).
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Instructions asked for per fetch.
    #[arg(long, default_value_t = 100)]
    fetch_max: u32,
    /// Same seed, same outcomes, transaction ids and re-posts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Plays a gateway against the ledger at `nats`. Exits 1 if a post went unanswered or
/// was refused or failed.
pub async fn sim(nats: Option<&str>, args: SimArgs, json: bool) -> Result<ExitCode, BoxError> {
    let url = nats.ok_or("gateway-sim needs --nats URL (the ledger's NATS server)")?;
    let key = keys::load_key(&args.key)?;
    let user = args
        .nats_user
        .unwrap_or_else(|| format!("gw-{}", args.gateway));
    let client =
        GatewayClient::connect(url, args.gateway.as_str(), &user, &args.nats_password).await?;
    let config = SimConfig {
        failure_rate: args.failure_rate,
        return_rate: args.return_rate,
        duplicate_rate: args.duplicate_rate,
        latency_ms: args.latency_ms,
        rounds: args.rounds,
        fetch_max: args.fetch_max,
        ..SimConfig::new(key, args.seed)
    };
    let summary = sim::run(&client, &config).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.line());
    }
    let clean = summary.transport_errors == 0
        && summary
            .by_status
            .keys()
            .all(|s| s == STATUS_ACCEPTED || s == STATUS_DUPLICATE);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `ansinh admin add-gateway`: creates a gateway key pair, writes the private key to
/// `key_out` and adds the public key to the ledger's directory, which every running
/// process follows (ADR 0020): it returns once this process's own view holds the key in
/// force, as `admin add-staff` does, so the gateway may sign with it at once.
pub async fn add_gateway(
    runtime: &Runtime,
    id: &str,
    key_out: &Path,
    json: bool,
) -> Result<ExitCode, BoxError> {
    // The directory first: a ledger that cannot be reached leaves no key file behind.
    let directory = open_directory(runtime).await?;
    let key = keys::new_gateway_key(id, key_out)?;
    let revision = directory.add_gateway_key(&key).await.map_err(|e| {
        format!(
            "the key file {} was written, but its public key is not in the ledger's directory ({e}); delete the file and run add-gateway again",
            key_out.display()
        )
    })?;
    let keys_of_gateway = directory
        .gateways()
        .current()
        .keys()
        .iter()
        .filter(|k| k.gateway_id == key.gateway_id)
        .count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "gateway_id": key.gateway_id,
                "key_id": key.key_id,
                "public_key": hex::encode(key.public_key),
                "keys_of_gateway": keys_of_gateway,
                "key_file": key_out,
                "directory_revision": revision,
            })
        );
    } else {
        println!(
            "gateway {}: key {} written to {} (mode 0600; give it to the gateway only), public key {} added to the ledger's directory: every running process accepts its signatures now",
            key.gateway_id,
            key.key_id,
            key_out.display(),
            hex::encode(key.public_key),
        );
        if keys_of_gateway > 1 {
            println!(
                "gateway {} now has {} keys: once it signs with the new one, withdraw each old key with `ansinh admin remove-gateway-key --key-id <old key id>`",
                key.gateway_id, keys_of_gateway
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
