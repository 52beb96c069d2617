from ctp_node.cli import main

raise SystemExit(main())
