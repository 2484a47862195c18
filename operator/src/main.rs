//! `l7mp-operator`: the l7mp service mesh's operator. `l7mp-operator crd` prints the
//! CRDs (`kubectl apply -f -` takes them).

mod crd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "The l7mp service mesh operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints the CustomResourceDefinitions (VirtualService, Target, Rule) as YAML.
    Crd,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd::yaml());
            ExitCode::SUCCESS
        }
    }
}
