//! `shoal-sim`: run a scenario (`run`), or many seeds of it (`swarm`).
//!
//! Exit status: 0 when every check passed, 1 when one failed, 2 on a bad
//! scenario or option.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shoal_simulator::{Overrides, Scenario, swarm};

/// jemalloc rather than the system allocator: a thousand agents allocate and
/// free small buffers for every packet, and jemalloc's per-size-class caches
/// make a run about 12 % cheaper (BENCHMARKS.md, seventh round). The
/// allocator changes no behaviour: digests are the same under either.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "shoal-sim",
    about = "Deterministic simulation of many Shoal agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario under one seed; write report.json, summary.txt, timeline.svg.
    Run {
        /// The scenario file.
        file: PathBuf,
        /// The master seed (default: the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the report (default: sim-out/<scenario>-<seed>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run twice and compare digests.
        #[arg(long)]
        check_determinism: bool,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Run many seeds, two at a time or more; shrink and save failures.
    Swarm {
        /// The scenario file.
        file: PathBuf,
        /// How many seeds.
        #[arg(long, default_value_t = 16)]
        seeds: u64,
        /// The first seed; seeds are consecutive from it.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Where failing seeds and shrunk scenarios go (default: sim-out/swarm-<scenario>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not shrink failing timelines.
        #[arg(long)]
        no_minimize: bool,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
}

#[derive(Args, Clone)]
struct OverrideArgs {
    /// Resize the cluster (the scalable member group absorbs the change).
    #[arg(long)]
    nodes: Option<usize>,
    /// Simulated duration (humantime, e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

impl OverrideArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            nodes: self.nodes,
            duration: self.duration,
        }
    }

    /// The options as they must be repeated to replay.
    fn replay_suffix(&self) -> String {
        let mut text = String::new();
        if let Some(nodes) = self.nodes {
            text.push_str(&format!(" --nodes {nodes}"));
        }
        if let Some(duration) = self.duration {
            text.push_str(&format!(
                " --duration {}",
                humantime::format_duration(duration)
            ));
        }
        text
    }
}

fn load(file: &Path, overrides: &OverrideArgs) -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::load(file)?;
    scenario.apply(&overrides.overrides())?;
    Ok(scenario)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("shoal-sim: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    match Cli::parse().command {
        Command::Run {
            file,
            seed,
            out,
            check_determinism,
            overrides,
        } => {
            let scenario = load(&file, &overrides)?;
            let seed = seed.unwrap_or(scenario.seed);
            let replay = format!(
                "shoal-sim run {}{}",
                file.display(),
                overrides.replay_suffix()
            );
            // The process exits after the last run: its world is not dropped.
            let report = if check_determinism {
                shoal_simulator::run(&scenario, seed, &replay)?
            } else {
                shoal_simulator::run_at_exit(&scenario, seed, &replay)?
            };
            let dir =
                out.unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-{seed}", scenario.name)));
            report.write(&dir)?;
            print!("{}", report.summary());
            println!("wrote {}", dir.display());
            if check_determinism {
                let again = shoal_simulator::run_at_exit(&scenario, seed, &replay)?;
                if again.digest != report.digest {
                    println!(
                        "NOT DETERMINISTIC: digest {} then {}",
                        report.digest, again.digest
                    );
                    return Ok(false);
                }
                println!("deterministic: both runs have digest {}", report.digest);
            }
            Ok(report.pass)
        }
        Command::Swarm {
            file,
            seeds,
            first_seed,
            threads,
            out,
            no_minimize,
            overrides,
        } => {
            let scenario = load(&file, &overrides)?;
            let seed_list: Vec<u64> = (first_seed..first_seed + seeds).collect();
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let replay = format!(
                "shoal-sim run {}{}",
                file.display(),
                overrides.replay_suffix()
            );
            let outcomes = swarm::run_seeds(&scenario, &seed_list, threads, &replay);
            let dir =
                out.unwrap_or_else(|| PathBuf::from(format!("sim-out/swarm-{}", scenario.name)));
            let mut failed = 0;
            for outcome in &outcomes {
                match &outcome.report {
                    Ok(report) if report.pass => {
                        println!(
                            "ok   seed {:<8} digest {} ({:.1} s)",
                            outcome.seed, report.digest, report.wall_time_s
                        );
                    }
                    Ok(report) => {
                        failed += 1;
                        let checks = outcome.failed_checks().join(", ");
                        println!("FAIL seed {:<8} {checks}", outcome.seed);
                        println!("     replay: {}", report.command);
                        let seed_dir = dir.join(format!("seed-{}", outcome.seed));
                        report.write(&seed_dir)?;
                        if !no_minimize && !scenario.timeline.is_empty() {
                            let first = &outcome.failed_checks()[0];
                            let (smallest, runs) = swarm::minimize(&scenario, outcome.seed, first);
                            let path = seed_dir.join("minimized.toml");
                            std::fs::write(&path, smallest.to_toml())
                                .with_context(|| format!("writing {}", path.display()))?;
                            println!(
                                "     shrunk the timeline from {} to {} entries in {runs} runs: shoal-sim run {} --seed {}",
                                scenario.timeline.len(),
                                smallest.timeline.len(),
                                path.display(),
                                outcome.seed
                            );
                        }
                    }
                    Err(error) => {
                        failed += 1;
                        println!("ERR  seed {:<8} {error}", outcome.seed);
                    }
                }
            }
            println!("{} seeds, {failed} failed", outcomes.len());
            Ok(failed == 0)
        }
    }
}
