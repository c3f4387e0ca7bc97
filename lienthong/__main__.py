from lienthong.cli import main

raise SystemExit(main())
