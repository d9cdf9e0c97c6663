import "./style.css";
import { createApiClient } from "./api";
import { startApp } from "./app";
import { webVersion } from "./version";

startApp(document, { api: createApiClient(), webVersion });
