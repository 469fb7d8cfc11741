//! Makes and changes sample homes for the side-by-side benchmark (tests/bench/side_by_side.py).
//!
//! ```text
//! cargo run --release -p bitbucket-diy-core --example sample_home -- generate DIR MEGABYTES
//! cargo run --release -p bitbucket-diy-core --example sample_home -- mutate DIR PERCENT
//! ```
//! `mutate` changes about PERCENT % of the home's files the way a working day does: new commits
//! (new loose objects and moved refs) in repositories spread over the home, and rewritten
//! attachments. It prints the number of files it created or changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;

use bitbucket_diy_core::sample_home::{SampleHome, SampleHomeSpec, commit_to_repo, generate};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["generate", dir, megabytes] => {
            let home =
                generate(Path::new(dir), &SampleHomeSpec::with_total_bytes(megabytes.parse::<u64>().unwrap() << 20))
                    .unwrap();
            println!("{}", home.repositories.len());
        }
        ["mutate", dir, percent] => println!("{}", mutate(Path::new(dir), percent.parse().unwrap())),
        _ => {
            eprintln!("usage: sample_home generate DIR MEGABYTES | mutate DIR PERCENT");
            std::process::exit(2);
        }
    }
}

fn mutate(home: &Path, percent: f64) -> usize {
    let files =
        walkdir::WalkDir::new(home).into_iter().filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file())).count();
    let target = ((files as f64) * percent / 100.0).ceil() as usize;
    let mut repos: Vec<_> = std::fs::read_dir(SampleHome::repositories_dir(home))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("HEAD").is_file())
        .collect();
    repos.sort();
    let attachments: Vec<_> = walkdir::WalkDir::new(home.join("shared/data/attachments"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let mut changed = 0;
    let mut round = 0;
    // A commit writes a blob, a tree and a commit object and moves a ref: four files.
    while changed < target {
        let repo = &repos[(round * 7919) % repos.len()];
        commit_to_repo(repo, &format!("benchmark change {round}")).unwrap();
        changed += 4;
        if let Some(file) = attachments.get(round) {
            let len = std::fs::metadata(file).unwrap().len() as usize;
            std::fs::write(file, vec![b'x' ^ (round as u8); len]).unwrap();
            changed += 1;
        }
        round += 1;
    }
    changed
}
