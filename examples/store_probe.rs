//! What a projection store costs for the projections' kind of write: records keyed like a
//! household's trail lines (`household:<id> NUL 01 NUL <sequence>`), written in batches,
//! into sled or redb, with the rate and the heap (and RSS) printed every 204,800 records.
//! ADR 0014 quotes it.
//!
//!     cargo run --profile bench --example store_probe -- sled            # 2,000,000 new keys, 150 B
//!     cargo run --profile bench --example store_probe -- redb --batch=65536
//!     cargo run --profile bench --example store_probe -- sled --overwrite --value=600
//!     cargo run --profile bench --example store_probe -- sled --records=1000000 --reopen
//!
//!     cargo run --profile bench --example store_probe -- redb --layout --cache=268435456
//!
//! `--layout` writes, for each record counted, what the layout ADR 0014 proposes writes for
//! a household event: its trail line (140 B) keyed by chain position, in ascending order;
//! the household's view (300 B) over again; and the last chunk of the household's index of
//! its lines (128 B) over again, a new chunk every 64 of its lines. The two rewritten keys
//! are bounded by the households, not by the log.
//! `--overwrite` writes 200,000 keys over and over instead of a new key each time;
//! `--sequential` writes new keys in ascending order (a line keyed by its chain position);
//! `--transaction` writes each batch in a sled transaction, as the projector does, instead
//! of `apply_batch`; `--collect=N` turns crossbeam-epoch's collector (through which sled
//! frees retired page versions) N times after each batch; `--pause` prints the heap once
//! the writes are flushed and again three seconds later;
//! `--cache=BYTES` sets the store's page cache (default: the ledger store's
//! `STORE_CACHE_BYTES_MAX`); `--reopen` then opens the store again in a new process, reads
//! every key and prints the heap before and after. The store lives in a temporary folder.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The system allocator, counting the bytes held (allocated less freed).
struct Counted;
static HELD: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is the system allocator's own, with the caller's arguments.
unsafe impl GlobalAlloc for Counted {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as i64, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as i64, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as i64 - l.size() as i64, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counted = Counted;

/// Households the keys are spread over (a province of the province bench's size).
const HOUSEHOLDS: u64 = 200_000;
/// Records between two printed lines.
const REPORT_EVERY: u64 = 204_800;
/// redb: an `Immediate` (fsynced) commit at most this long after the last one, the
/// others `Durability::None`, as ADR 0014 proposes.
const DURABLE_EVERY: Duration = Duration::from_secs(2);
const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");

fn key(n: u64, overwrite: bool, sequential: bool) -> Vec<u8> {
    if sequential {
        // A line keyed by its chain position: `01 NUL <sequence>`.
        return [b"01\x00".as_slice(), &n.to_be_bytes()].concat();
    }
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % HOUSEHOLDS;
    let sequence = if overwrite { h } else { n };
    let mut k = format!("household:01{:05}-{:06}", h / 1000, h % 1000).into_bytes();
    k.extend_from_slice(b"\x0001\x00");
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// The writes `--layout` makes for event `n`: (key, value length).
fn layout(n: u64) -> [(Vec<u8>, usize); 3] {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % HOUSEHOLDS;
    let household = format!("hh/01{:05}-{:06}", h / 1000, h % 1000).into_bytes();
    let chunk = (n / HOUSEHOLDS) / 64;
    let mut index = [b"ix/".as_slice(), &household[3..], b"\x00"].concat();
    index.extend_from_slice(&chunk.to_be_bytes());
    [(key(n, false, true), 140), (household, 300), (index, 128)]
}

fn value_of(len: usize) -> Vec<u8> {
    vec![7u8; len]
}

fn heap() -> String {
    let rss = ansinh::telemetry::status_kib("VmRSS:").unwrap_or_default();
    format!("heap {} MiB, RSS {rss} kB", HELD.load(Relaxed) >> 20)
}

fn arg(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
        .map(|v| v.parse().expect("a number"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let redb = args.iter().any(|a| a == "redb");
    let overwrite = args.iter().any(|a| a == "--overwrite");
    let sequential = args.iter().any(|a| a == "--sequential");
    let layout_mode = args.iter().any(|a| a == "--layout");
    let transaction = args.iter().any(|a| a == "--transaction");
    let collect = arg(&args, "collect").unwrap_or(0);
    let records = arg(&args, "records").unwrap_or(2_000_000);
    let batch = arg(&args, "batch").unwrap_or(4_096);
    let value = vec![7u8; arg(&args, "value").unwrap_or(150) as usize];
    let cache = arg(&args, "cache").unwrap_or(ansinh::log::store::STORE_CACHE_BYTES_MAX);
    if let Some(path) = args.iter().find_map(|a| a.strip_prefix("--open=")) {
        return reopen(path, redb, cache);
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store");
    println!(
        "{} · {records} records of {} B · batches of {batch} · cache {cache} B · {}",
        if redb { "redb" } else { "sled" },
        value.len(),
        if layout_mode {
            "the proposed layout: a line by position, a view and an index chunk rewritten"
        } else if overwrite {
            "overwrites of 200,000 keys"
        } else if sequential {
            "new keys in order"
        } else {
            "new keys"
        }
    );
    let sled_tree = (!redb)
        .then(|| sled::Config::new().path(&path).cache_capacity(cache).open())
        .transpose()?
        .map(|db| db.open_tree("t").map(|tree| (db, tree)))
        .transpose()?;
    let redb_db = if redb {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache as usize);
        Some(builder.create(&path)?)
    } else {
        None
    };
    let mut written = 0u64;
    let mut reported = 0u64;
    let mut started = Instant::now();
    let mut durable = Instant::now();
    while written < records {
        let end = (written + batch).min(records);
        if let Some((_, tree)) = &sled_tree {
            if transaction {
                tree.transaction(|tx| {
                    for n in written..end {
                        if layout_mode {
                            for (k, len) in layout(n) {
                                tx.insert(k, &value_of(len)[..])?;
                            }
                            continue;
                        }
                        tx.insert(key(n, overwrite, sequential), value.as_slice())?;
                    }
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| format!("{e:?}"))?;
            } else {
                let mut b = sled::Batch::default();
                for n in written..end {
                    if layout_mode {
                        for (k, len) in layout(n) {
                            b.insert(k, value_of(len));
                        }
                        continue;
                    }
                    b.insert(key(n, overwrite, sequential), value.as_slice());
                }
                tree.apply_batch(b)?;
            }
            for _ in 0..collect {
                crossbeam_epoch::pin().flush();
            }
        }
        if let Some(db) = &redb_db {
            let mut tx = db.begin_write()?;
            if durable.elapsed() < DURABLE_EVERY {
                tx.set_durability(redb::Durability::None)?;
            } else {
                durable = Instant::now();
            }
            {
                let mut table = tx.open_table(REDB_TABLE)?;
                let mut keys: Vec<(Vec<u8>, usize)> = (written..end)
                    .flat_map(|n| {
                        if layout_mode {
                            layout(n).to_vec()
                        } else {
                            vec![(key(n, overwrite, sequential), value.len())]
                        }
                    })
                    .collect();
                keys.sort();
                for (k, len) in keys {
                    table.insert(k.as_slice(), &value_of(len)[..])?;
                }
            }
            tx.commit()?;
        }
        if end / REPORT_EVERY != written / REPORT_EVERY || end == records {
            let rate = (end - reported) as f64 / started.elapsed().as_secs_f64();
            println!("{end:>9} records: {rate:>8.0} records/s · {}", heap());
            (reported, started) = (end, Instant::now());
        }
        written = end;
    }
    if let (Some((db, _)), true) = (&sled_tree, args.iter().any(|a| a == "--pause")) {
        db.flush()?;
        println!("flushed · {}", heap());
        std::thread::sleep(Duration::from_secs(3));
        println!("3 s later · {}", heap());
    }
    if args.iter().any(|a| a == "--reopen") {
        drop((sled_tree, redb_db));
        // In a process of its own: sled frees a closed store's memory from its own
        // threads, later, which would be counted against the store opened next.
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(args.iter().filter(|a| *a == "redb"))
            .arg(format!("--open={}", path.display()))
            .arg(format!("--cache={cache}"))
            .status()?;
        assert!(status.success(), "the reopening process failed");
    }
    Ok(())
}

/// Opens the store at `path` and reads every key, printing the heap before and after.
fn reopen(path: &str, redb: bool, cache: u64) -> Result<()> {
    let count = if redb {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache as usize);
        let db = builder.open(path)?;
        println!("reopened in a new process · {}", heap());
        let tx = db.begin_read()?;
        let table = tx.open_table(REDB_TABLE)?;
        table.iter()?.count()
    } else {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache)
            .open()?;
        println!("reopened in a new process · {}", heap());
        db.open_tree("t")?.iter().count()
    };
    println!("read {count} keys · {}", heap());
    Ok(())
}
