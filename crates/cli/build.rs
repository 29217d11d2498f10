//! Puts the git revision of the build into `DDBGUARD_GIT_SHA` for `--version` and `ddbguard_build_info`.
//!
//! Outside a git checkout (a source tarball, a Docker build context without `.git`) the `GIT_SHA`
//! environment variable names the revision, else it is `unknown`: the build never fails for want of git.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_SHA");
    let sha = match std::env::var("GIT_SHA") {
        Ok(sha) if !sha.trim().is_empty() => sha.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a branch switch) and the ref it points at (a commit).
            for path in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["rev-parse", "--git-path", &head_ref])
            {
                println!("cargo:rerun-if-changed={p}");
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=DDBGUARD_GIT_SHA={sha}");
}
