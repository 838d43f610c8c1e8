//! `longrun token`: secrets for `serve --tokens`, so that the file holds
//! only their SHA-256.

use std::io::Read as _;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::cli::TokenCommand;
use longrun_server::Grant;

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::New { name, grants } => {
            for grant in &grants {
                Grant::parse(grant).map_err(|why| anyhow::anyhow!(why))?;
            }
            let secret = format!("lr_{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
            let grants: Vec<String> = grants.iter().map(|grant| format!("{grant:?}")).collect();
            // The entry on stdout, ready to append to the tokens file; the
            // secret on stderr, shown once and stored nowhere.
            println!(
                "\n# {name}: made by `longrun token new`; only the secret's SHA-256 is kept here.\n\
                 [[token]]\nname = {name:?}\nsha256 = \"{}\"\ngrants = [{}]",
                hash(&secret),
                grants.join(", ")
            );
            eprintln!("{secret}");
            Ok(())
        }
        TokenCommand::Hash => {
            let mut secret = String::new();
            std::io::stdin()
                .read_to_string(&mut secret)
                .context("cannot read the secret from standard input")?;
            let secret = secret.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                bail!("no secret on standard input");
            }
            println!("{}", hash(secret));
            Ok(())
        }
    }
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
