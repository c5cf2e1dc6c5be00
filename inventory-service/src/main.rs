use inventory_service::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::run(Application::build).await
}
