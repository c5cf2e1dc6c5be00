use console::{Application, Config};
use service_kit::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = service_kit::config::load(&Config::defaults())?;
    if std::env::args().nth(1).as_deref() == Some(service_kit::HEALTHCHECK_ARG) {
        return service_kit::healthcheck(&config.common).await;
    }
    service_kit::telemetry::init(&config.common)?;
    let app = Application::build(config).await?;
    println!("console: http://localhost:{}", app.port());
    app.run_until_stopped(service_kit::shutdown_signal()).await
}
