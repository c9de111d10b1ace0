//! The `shardlog` command-line tool; see `shardlog --help` and the library's `cli` module.

fn main() -> std::process::ExitCode {
    shardlog::cli::main()
}
