use payment_service::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    service_kit::telemetry::init(config.common.log_format);
    Application::build(config)
        .await?
        .run_until_stopped(service_kit::shutdown_signal())
        .await
}
