from lora_manager.cli import main

main()
