from celery_morgue.tui.cli import main

main()
