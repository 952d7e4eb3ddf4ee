use clap::Parser;

fn main() -> std::process::ExitCode {
    portcullis::cli::Cli::parse().run()
}
