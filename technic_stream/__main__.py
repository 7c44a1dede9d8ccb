from technic_stream.cli import main

raise SystemExit(main())
