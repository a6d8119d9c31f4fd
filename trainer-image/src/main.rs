//! `megatron-trainer`: the program each rank pod runs (see `cli`).
//!
//! Exit codes: 0 success, 2 invalid input or config (not worth retrying),
//! 1 any other failure (may be retried).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
