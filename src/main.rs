//! The `offload` binary: parse the command line, dispatch, print any error once, exit.

fn main() {
    let code = offload::cli::main();
    std::process::exit(code);
}
