//! What the benches share.

/// User plus system CPU seconds of a process so far (`self` or a pid), from
/// /proc/PID/stat (utime and stime, in the kernel's fixed USER_HZ of 100 ticks a second).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Seconds the machine's cores, all together, sat idle or waiting on the disk so far
/// (the idle and iowait columns of /proc/stat's `cpu` line, in USER_HZ ticks).
#[allow(dead_code)] // the province bench's
pub fn machine_idle_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some((cpu.get(3)? + cpu.get(4)?) as f64 / 100.0)
}

/// CPU seconds of this process's threads so far, summed by thread name (a thread that
/// ended is not counted: callers measure threads that outlive the step).
#[allow(dead_code)] // the province bench's
pub fn thread_cpu_seconds() -> std::collections::HashMap<String, f64> {
    let mut by_name = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks = fields
            .get(11)
            .zip(fields.get(12))
            .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?));
        if let Some(ticks) = ticks {
            *by_name.entry(name).or_insert(0.0) += ticks as f64 / 100.0;
        }
    }
    by_name
}
