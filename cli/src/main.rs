//! `twin`: Twin Matcher's command line.
//!
//! A thin host around the use cases (`twin_app`): it reads its environment ([`host`]), parses
//! arguments, calls a use case and prints the result.
//! Commands that produce data print JSON lines on standard output; progress and summaries go
//! to standard error.

mod embed;
mod eval;
mod faces;
mod gallery;
mod host;
mod model;
mod serve;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Twin Matcher: find your celebrity lookalike.
#[derive(Parser)]
#[command(name = "twin", version, about)]
struct Cli {
    /// Where the gallery, enrollments and models live (default: $TWIN_DATA, else
    /// ~/.local/share/twin-matcher).
    #[arg(long, global = true, env = "TWIN_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage models: import dlib's face network into ONNX, list trained versions, promote one.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Embed faces and print one JSON line per input: {"path", "faces": [{"box", "landmarks", "embedding"}]}.
    Embed(embed::EmbedArgs),
    /// Find faces in a photo, or the enrollment frames of a video (kept and rejected, with
    /// reasons): one JSON report on stdout; --out DIR also writes the chips and report.json.
    Faces(faces::FacesArgs),
    /// Manage the gallery.
    Gallery {
        #[command(subcommand)]
        command: GalleryCommand,
    },
    /// Who do I look like? The closest identities to each face in a photo.
    Match(gallery::MatchArgs),
    /// Join the gallery with a video (the same ingest → queue → dataset path as the server).
    Enroll(gallery::EnrollArgs),
    /// Serve the HTTP API and the web page (prints the page's address).
    Serve(serve::ServeArgs),
    /// Train an identity head on the current dataset, compare it with the gallery on held-out
    /// crops, and promote it if it is better (prints metrics.json).
    Train(train::TrainArgs),
    /// Measure accuracy.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
}

#[derive(Subcommand)]
enum GalleryCommand {
    /// Import a folder with one sub-folder of photos per identity, or a Hugging Face
    /// image-classification dataset (.parquet).
    Import(gallery::ImportArgs),
    /// Erase a person: their identity, crops, uploads and enrollments (indexed or not), what
    /// every trained model knows of them, and the older dataset versions that held their rows.
    Erase {
        /// The person's slug (as `GET /v1/identities` lists it).
        slug: String,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Verification accuracy on an LFW-style pairs.txt (10-fold, threshold chosen on the other folds).
    Pairs(eval::PairsArgs),
    /// Identification on a folder per identity: held-out photos against the rest (rank-1, rank-5).
    Identify(eval::IdentifyArgs),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Import dlib_face_recognition_resnet_model_v1.dat into an ONNX model.
    ImportDlib {
        /// The dlib .dat file.
        dat: PathBuf,
        /// Where to write the ONNX model (written atomically; nothing is left on failure).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// List the trained model versions with their held-out metrics (JSON lines).
    List,
    /// Upload the imported backbone to a deployment's bucket (models/base/backbone.onnx), where
    /// the train function starts from.
    Publish {
        /// The bucket (the stack's Bucket output).
        #[arg(long, env = "TWIN_BUCKET")]
        bucket: String,
        /// The backbone to upload (default: the one scripts/setup imported).
        #[arg(long)]
        backbone: Option<PathBuf>,
        /// Another S3 endpoint (e.g. a local S3 server); otherwise AWS's, from the usual
        /// AWS environment and profile.
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        endpoint_url: Option<String>,
    },
    /// Point models/CURRENT at a version (promotion or rollback).
    Promote {
        /// The version.
        version: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TWIN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data = host::data_dir(cli.data.clone());
    host::runtime();
    let result = match cli.command {
        Command::Gallery {
            command: GalleryCommand::Import(args),
        } => gallery::import(&data, args),
        Command::Gallery {
            command: GalleryCommand::Erase { slug },
        } => gallery::erase(&data, &slug),
        Command::Match(args) => gallery::match_photo(&data, args),
        Command::Enroll(args) => gallery::enroll(&data, args),
        Command::Serve(args) => serve::run(&data, args),
        Command::Model {
            command: ModelCommand::ImportDlib { dat, output },
        } => model::import_dlib(&dat, &output),
        Command::Model {
            command: ModelCommand::List,
        } => model::list(&data),
        Command::Model {
            command: ModelCommand::Promote { version },
        } => model::promote(&data, version),
        Command::Model {
            command:
                ModelCommand::Publish {
                    bucket,
                    backbone,
                    endpoint_url,
                },
        } => model::publish(&bucket, backbone, endpoint_url),
        Command::Train(args) => train::run(&data, args),
        Command::Embed(args) => embed::run(args),
        Command::Eval {
            command: EvalCommand::Pairs(args),
        } => eval::pairs(args),
        Command::Eval {
            command: EvalCommand::Identify(args),
        } => eval::identify(args),
        Command::Faces(args) => faces::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("twin: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
