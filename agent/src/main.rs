//! The `shoal` binary: the agent daemon and its command-line client.

fn main() -> std::process::ExitCode {
    shoal_agent::cli::main()
}
