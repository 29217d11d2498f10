//! The `ddbguard` binary. Everything lives in the library; see `ddbguard::main`.

fn main() -> std::process::ExitCode {
    ddbguard::main()
}
